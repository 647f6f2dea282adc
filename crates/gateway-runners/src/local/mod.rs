//! The local sandbox runner: the embedded default, needing nothing but a Linux machine.
//!
//! Every job gets a fresh temporary directory (its working directory, removed afterwards), an
//! environment holding only the spec's variables (plus a fixed `PATH`, and `HOME`/`TMPDIR`
//! pointing into the sandbox, unless the spec sets them), its own process group, rlimits (CPU
//! time, address space, open files, processes) and a wall-clock timeout that kills the whole
//! tree: SIGTERM, a grace period, then SIGKILL.
//!
//! Two isolation levels, reported in every outcome:
//! - [`IsolationLevel::Namespaces`] when every part of the sandbox works here (checked once, by
//!   running a job through it, when the runner is built):
//!   - bubblewrap namespaces: no network (only a private loopback) unless the policy's
//!     `runner.network` obligation allows destinations, and then exactly those, which must be
//!     loopback `host:port`s (e.g. a local API server or database port): the runner listens on
//!     each inside the job's namespace and forwards from the host (private module `egress`;
//!     other destinations are refused, naming them); read-only system
//!     directories and `/proc/sys`, no `/sys`, no view of the rest of the host (the gateway's
//!     files included), a pid namespace torn down with the job, no capabilities, no further
//!     user namespaces;
//!   - a dedicated host uid and gid per job from a reserved range ([`job_ids`]), never host
//!     root, so that nothing the job does or writes carries any host privilege (its files
//!     live in its own `nosuid` tmpfs, owned by that uid);
//!   - a cgroup per job bounding memory (tmpfs included), processes and CPU rate
//!     for the whole job, removed afterwards;
//!   - a seccomp filter modelled on Docker's default profile.
//!
//!   This needs the gateway to run as root (to switch to the job's uid and to create
//!   cgroups), `bwrap` 0.8 or newer, util-linux's `setpriv`, and writable cgroups (v2 with
//!   memory, pids and cpu delegated, or the three v1 hierarchies).
//!   The cgroup, seccomp and launch details are documented in the sources of the private
//!   modules `cgroup`, `seccomp` and `launch`.
//!
//!   Sandboxes are started ahead of their jobs, a few at a time
//!   ([`LocalRunnerBuilder::sandbox_pool`]): the launch chain's costliest steps (joining the
//!   job's cgroup, bubblewrap's namespaces and mounts) then happen before the job arrives.
//!   Each pre-started sandbox serves one job only and is torn down with it; its trampoline
//!   receives the job's argv, environment and rlimits over a pipe (never a command line). A
//!   job that the trampoline cannot carry (read-only mounts, an environment name a shell
//!   cannot export, rlimits above the gateway's own hard limits) is launched directly, with
//!   the same sandbox. The private modules `pool` and `trampoline` hold the details.
//! - [`IsolationLevel::Process`] otherwise, with the reason logged. This level does **not**
//!   isolate the network or the file system, runs the job as the gateway's own user, and a
//!   job can leave its process group on purpose (`setsid`); callers that need more require
//!   [`IsolationLevel::Namespaces`] with [`LocalRunnerBuilder::require`], and the runner then
//!   fails to build, naming what is missing, rather than run jobs with less.
//!
//! At the process level, RLIMIT_NPROC is per user: it is ignored for root, and for another
//! user it counts all of that user's processes, so it is only a coarse fork-bomb brake there.
//! Landlock was considered and left out: bwrap's mount namespace already hides the host, and
//! Landlock would need a helper binary of our own inside the sandbox.

mod cgroup;
mod egress;
pub mod job_ids;
mod launch;
mod pool;
mod sandbox;
mod seccomp;
mod trampoline;
mod tree;

use async_trait::async_trait;
use gateway_core::output::BoundedOutput;
use gateway_core::{
    AbandonedJob, IsolationLevel, JobOutcome, JobSpec, JobStatus, NetworkAccess, Runner,
    RunnerError, RunnerInfo, Teardown,
};
use rustix::process::Signal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The `PATH` a job gets unless its spec sets one: system directories only.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long leftover output pipes may stay open after the job's processes are gone.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How long the runner waits for a killed process tree (or cgroup) to be empty.
const KILL_CONFIRM: Duration = Duration::from_secs(5);

/// Sandboxes a runner keeps started ahead of their jobs, by default.
pub const DEFAULT_SANDBOX_POOL: usize = 4;

/// Builds a [`LocalRunner`]; see [`LocalRunner::builder`].
///
/// ```no_run
/// use gateway_core::IsolationLevel;
/// use gateway_runners::LocalRunner;
///
/// // Refuse to start rather than run jobs with less than the full sandbox.
/// let runner = LocalRunner::builder()
///     .require(IsolationLevel::Namespaces)
///     .job_ids(0x7000_0000, 65_536)
///     .build()?;
/// assert_eq!(runner.isolation(), IsolationLevel::Namespaces);
/// # Ok::<(), gateway_core::RunnerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalRunnerBuilder {
    minimum: IsolationLevel,
    maximum: IsolationLevel,
    instance: Option<String>,
    grace: Duration,
    temp_root: Option<PathBuf>,
    bwrap: Option<PathBuf>,
    job_ids: (u32, u32),
    cgroup_parent: Option<PathBuf>,
    pool: usize,
}

impl Default for LocalRunnerBuilder {
    fn default() -> Self {
        Self {
            minimum: IsolationLevel::Process,
            maximum: IsolationLevel::Namespaces,
            instance: None,
            grace: Duration::from_secs(2),
            temp_root: None,
            bwrap: None,
            job_ids: (job_ids::DEFAULT_FIRST_JOB_ID, job_ids::DEFAULT_JOB_ID_COUNT),
            cgroup_parent: None,
            pool: DEFAULT_SANDBOX_POOL,
        }
    }
}

impl LocalRunnerBuilder {
    /// Fail [`build`](Self::build) with [`RunnerError::Unsupported`] unless the runner can give
    /// jobs at least `level`.
    pub fn require(mut self, level: IsolationLevel) -> Self {
        self.minimum = level;
        self
    }

    /// Never use more than `level` (e.g. [`IsolationLevel::Process`] to skip bwrap, for tests
    /// and benchmarks comparing the levels).
    pub fn at_most(mut self, level: IsolationLevel) -> Self {
        self.maximum = level;
        self
    }

    /// This runner's instance id (reported in [`RunnerInfo`]); a random one by default.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Time between SIGTERM and SIGKILL when a job is stopped (default 2 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Directory under which process-level jobs' temporary directories are created (default:
    /// the system's temporary directory). Namespaced jobs work in a tmpfs of their own.
    pub fn temp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_root = Some(dir.into());
        self
    }

    /// Use this `bwrap` binary instead of looking in the system directories.
    pub fn bwrap_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.bwrap = Some(path.into());
        self
    }

    /// The host uids (and gids) namespaced jobs run as: `count` ids from `first`, one per
    /// job, round-robin. Reserve them: they must belong to no account and own no file. The
    /// default is [`job_ids::DEFAULT_JOB_ID_COUNT`] ids from [`job_ids::DEFAULT_FIRST_JOB_ID`].
    pub fn job_ids(mut self, first: u32, count: u32) -> Self {
        self.job_ids = (first, count);
        self
    }

    /// The cgroup (a path inside each cgroup hierarchy, e.g. `/system.slice/gateway/jobs`)
    /// under which job cgroups are created, instead of `agent-gateway` under the gateway's own
    /// cgroup. Needed on cgroup v2 when the gateway's cgroup holds processes (it then cannot
    /// delegate controllers): name a delegated cgroup holding none.
    pub fn cgroup_parent(mut self, path: impl Into<PathBuf>) -> Self {
        self.cgroup_parent = Some(path.into());
        self
    }

    /// How many namespaced sandboxes to keep started ahead of their jobs (default
    /// [`DEFAULT_SANDBOX_POOL`]; 0 launches every job directly). Each is used by one job
    /// only; each waiting one holds three processes, a cgroup and a uid of the range.
    pub fn sandbox_pool(mut self, sandboxes: usize) -> Self {
        self.pool = sandboxes;
        self
    }

    /// Detects what this machine offers (runs a job through the sandbox once, blocking, to
    /// check that every part of it really works) and builds the runner with the strongest
    /// level allowed.
    pub fn build(self) -> Result<LocalRunner, RunnerError> {
        let unsupported = |message: String| RunnerError::Unsupported { message };
        if self.minimum > self.maximum {
            return Err(unsupported(format!(
                "required isolation {} exceeds the allowed maximum {}",
                self.minimum, self.maximum
            )));
        }
        if self.minimum > IsolationLevel::Namespaces {
            return Err(unsupported(format!(
                "the local runner offers at most namespaces isolation, {} was required",
                self.minimum
            )));
        }
        let prlimit = sandbox::find_system_binary("prlimit").ok_or_else(|| {
            unsupported("`prlimit` (util-linux) not found: rlimits cannot be enforced".into())
        })?;
        let (sandbox, why_not) = if self.maximum >= IsolationLevel::Namespaces {
            match launch::Sandbox::detect(&self) {
                Ok(sandbox) => (Some(Arc::new(sandbox)), String::new()),
                Err(why) => (None, why),
            }
        } else {
            (None, "namespaces not allowed by configuration".to_string())
        };
        let level = if sandbox.is_some() {
            IsolationLevel::Namespaces
        } else {
            IsolationLevel::Process
        };
        if level < self.minimum {
            return Err(unsupported(format!(
                "isolation {} required but only {level} is available: {why_not}",
                self.minimum
            )));
        }
        if sandbox.is_none() {
            tracing::info!(reason = %why_not, "local runner: process-level isolation only");
        }
        Ok(LocalRunner {
            level,
            prlimit,
            sandbox,
            instance: self
                .instance
                .unwrap_or_else(|| format!("local-{}", uuid::Uuid::now_v7())),
            grace: self.grace,
            temp_root: self.temp_root,
        })
    }
}

/// Runs jobs as local processes, sandboxed when the machine allows it. See the module docs.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    level: IsolationLevel,
    prlimit: PathBuf,
    sandbox: Option<Arc<launch::Sandbox>>,
    instance: String,
    grace: Duration,
    temp_root: Option<PathBuf>,
}

/// What the supervision of a started job observed.
struct Supervised {
    status: JobStatus,
    duration: Duration,
    stdout: (String, bool),
    stderr: (String, bool),
    notes: Vec<String>,
}

impl LocalRunner {
    /// A builder with the defaults: strongest available level, at least process level.
    pub fn builder() -> LocalRunnerBuilder {
        LocalRunnerBuilder::default()
    }

    /// The strongest runner this machine supports (namespaces if the sandbox works, else
    /// process).
    pub fn detect() -> Result<Self, RunnerError> {
        Self::builder().build()
    }

    /// The isolation level every job of this runner gets.
    pub fn isolation(&self) -> IsolationLevel {
        self.level
    }

    /// Waits up to `within` until at least `n` pre-started sandboxes are waiting for jobs
    /// (started, their chain possibly still running); whether they are. For tests and
    /// benchmarks measuring a warm pool; a runner without one is never ready.
    pub async fn wait_pool_ready(&self, n: usize, within: Duration) -> bool {
        let Some(sandbox) = &self.sandbox else {
            return n == 0;
        };
        let deadline = Instant::now() + within;
        loop {
            if sandbox.pool.ready() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Starts sandboxes for jobs with `limits` until the pool is full (the pool otherwise
    /// fills as jobs arrive), and waits up to `within` for one to be ready; whether one is.
    /// E.g. at start-up, for the limits most jobs use.
    pub async fn prestart(&self, limits: &gateway_core::JobLimits, within: Duration) -> bool {
        let Some(sandbox) = &self.sandbox else {
            return false;
        };
        let limits = launch::Sandbox::cgroup_limits(limits);
        while refill(sandbox, limits) {}
        self.wait_pool_ready(1, within).await
    }

    /// How many jobs so far ran in a pre-started sandbox (the others were launched directly).
    pub fn pooled_jobs(&self) -> u64 {
        self.sandbox.as_ref().map_or(0, |s| {
            s.pooled_jobs.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    fn check(&self, spec: &JobSpec) -> Result<(), RunnerError> {
        let Some(program) = spec.command.first() else {
            return Err(RunnerError::invalid_input("empty command"));
        };
        let args_ok = spec.command.iter().all(|a| !a.contains('\0'));
        if !args_ok {
            return Err(RunnerError::invalid_input("NUL byte in the command"));
        }
        let keys = spec.env.keys().chain(spec.secret_env.keys());
        for key in keys {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(RunnerError::invalid_input(format!(
                    "invalid environment variable name {key:?}"
                )));
            }
        }
        if spec.env.values().any(|v| v.contains('\0'))
            || spec.secret_env.values().any(|v| v.expose().contains(&0))
        {
            // Do not name the variable's value: it may be a secret.
            return Err(RunnerError::invalid_input(
                "NUL byte in an environment value",
            ));
        }
        match &spec.network {
            NetworkAccess::None => {}
            NetworkAccess::Allowlist { destinations } => {
                if self.sandbox.is_none() {
                    return Err(RunnerError::Unsupported {
                        message: "a network allowlist needs namespaces isolation (bwrap): \
                                  process-level jobs share the gateway's network"
                            .into(),
                    });
                }
                egress::loopback_destinations(destinations)
                    .map_err(|message| RunnerError::Unsupported { message })?;
            }
            // NetworkAccess is non_exhaustive: a mode this runner does not know fails closed.
            #[allow(unreachable_patterns)]
            _ => {
                return Err(RunnerError::Unsupported {
                    message: "unknown network access mode".into(),
                });
            }
        }
        if !spec.mounts.is_empty() && self.sandbox.is_none() {
            return Err(RunnerError::Unsupported {
                message: "read-only mounts need namespaces isolation (bwrap)".into(),
            });
        }
        for mount in &spec.mounts {
            if !mount.host_path.is_absolute() || !mount.job_path.is_absolute() {
                return Err(RunnerError::invalid_input("mount paths must be absolute"));
            }
        }
        // Resolve the program here, so that "not found" is an error of the runner rather than
        // an exit code indistinguishable from the job's own.
        let path = spec
            .env
            .get("PATH")
            .map(String::as_str)
            .unwrap_or(DEFAULT_PATH);
        let found = if program.contains('/') {
            self.sandbox.is_some() || sandbox::is_executable(Path::new(program))
        } else {
            path.split(':')
                .any(|dir| sandbox::is_executable(&Path::new(dir).join(program)))
        };
        if !found {
            return Err(RunnerError::invalid_input(format!(
                "program {program:?} not found"
            )));
        }
        Ok(())
    }

    /// A process-level job: prlimit, then the job, in its temporary directory.
    fn process_command(&self, spec: &JobSpec, workdir: &Path) -> Command {
        let mut cmd = Command::new(&self.prlimit);
        cmd.args(sandbox::prlimit_args(&spec.limits))
            .args(&spec.command)
            .current_dir(workdir);
        cmd
    }

    /// Starts `cmd` with the job's environment (see [`job_env`]).
    fn spawn_job(
        mut cmd: Command,
        spec: &JobSpec,
        home: &Path,
        tmp: &Path,
    ) -> Result<Child, RunnerError> {
        cmd.env_clear();
        for (key, value) in job_env(spec, home, tmp) {
            // Secrets go to the job's environment only (never argv, never logs).
            cmd.env(
                std::ffi::OsStr::from_bytes(key),
                std::ffi::OsStr::from_bytes(value),
            );
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd.spawn()
            .map_err(|e| RunnerError::unavailable("cannot start the job", e))
    }

    /// Supervises a started job to its end: exit, timeout or cancellation, then the whole
    /// process group killed and the output collected. `message` goes to the job's stdin first
    /// (a pre-started sandbox's trampoline: the job itself).
    async fn supervise(
        &self,
        mut child: Child,
        message: Option<zeroize::Zeroizing<Vec<u8>>>,
        started: Instant,
        spec: &JobSpec,
        cancel: CancellationToken,
    ) -> Result<Supervised, RunnerError> {
        let cap = spec.limits.max_output_bytes;
        // Armed from here on: dropping this future SIGKILLs the whole group.
        let mut group = tree::ProcessGroup::new(child.id());
        if let (Some(message), Some(mut stdin)) = (message, child.stdin.take()) {
            // A task of its own, so that a full pipe never holds up the timeout. A failed
            // write means the sandbox is gone, which its exit status tells.
            tokio::spawn(async move {
                let _ = stdin.write_all(&message).await;
            });
        }
        let stdout = capture(child.stdout.take(), cap);
        let stderr = capture(child.stderr.take(), cap);

        let status = tokio::select! {
            exit = child.wait() => match exit {
                Ok(exit) => status_of(exit),
                Err(e) => {
                    group.kill();
                    return Err(RunnerError::internal("cannot wait for the job", e));
                }
            },
            () = tokio::time::sleep(spec.limits.timeout) => {
                stop(&mut child, &group, self.grace).await;
                JobStatus::TimedOut
            }
            () = cancel.cancelled() => {
                stop(&mut child, &group, self.grace).await;
                JobStatus::Cancelled
            }
        };
        let duration = started.elapsed();

        // Whatever the job left behind in its group (background processes) goes too.
        let mut notes = Vec::new();
        if !group.kill_and_confirm(KILL_CONFIRM).await {
            notes.push("processes of the job's group survived SIGKILL".to_string());
        }
        let stdout = collect(stdout, cap, &mut notes, "stdout").await;
        let stderr = collect(stderr, cap, &mut notes, "stderr").await;
        Ok(Supervised {
            status,
            duration,
            stdout,
            stderr,
            notes,
        })
    }

    async fn run_process(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        let mut builder = tempfile::Builder::new();
        builder.prefix("agw-job-");
        let workdir = match &self.temp_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .map_err(|e| RunnerError::unavailable("cannot create the job's directory", e))?;
        let environment_id = workdir.path().display().to_string();
        let cmd = self.process_command(&spec, workdir.path());
        tracing::debug!(environment = %environment_id, isolation = %self.level, "local job starting");
        let started = Instant::now();
        let child = Self::spawn_job(cmd, &spec, workdir.path(), workdir.path())?;
        let mut run = self.supervise(child, None, started, &spec, cancel).await?;
        if let Err(e) = workdir.close() {
            run.notes
                .push(format!("cannot remove the job's directory: {e}"));
        }
        Ok(self.outcome(run, environment_id))
    }

    async fn run_namespaced(
        &self,
        sandbox: &Arc<launch::Sandbox>,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        let home = Path::new(sandbox::SANDBOX_WORKDIR);
        let tmp = Path::new("/tmp");
        let started = Instant::now();
        let limits = launch::Sandbox::cgroup_limits(&spec.limits);
        let fits = sandbox.fit(&spec) == trampoline::Fit::Yes;
        // Egress forwarders are opened inside the sandbox before the job runs, so the job must
        // arrive through a trampoline: a sandbox of its own, started now (`check` accepted the
        // destinations).
        let egress_to = match &spec.network {
            NetworkAccess::Allowlist { destinations } => Some(
                egress::loopback_destinations(destinations)
                    .map_err(|message| RunnerError::Unsupported { message })?,
            ),
            _ => None,
        };
        let parked = if egress_to.is_some() {
            // On this runtime worker, like `refill`: bwrap's `--die-with-parent` ties the
            // sandbox to the thread that spawns it.
            let parked = sandbox.park_for(&spec).map_err(|message| {
                RunnerError::unavailable_msg(format!("cannot start the job's sandbox: {message}"))
            })?;
            Some(parked)
        } else if fits {
            let parked = sandbox.pool.take(limits);
            if parked.is_some() {
                sandbox
                    .pooled_jobs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            parked
        } else {
            None
        };
        let (name, cgroup, child, message) = match parked {
            Some(parked) => {
                let message = trampoline::message(
                    sandbox::NamespacedRlimits::of(&spec.limits),
                    job_env(&spec, home, tmp),
                    &spec.command,
                );
                (parked.name, parked.cgroup, parked.child, Some(message))
            }
            None => {
                let name = uuid::Uuid::now_v7().simple().to_string();
                let (cgroup, cmd) = sandbox.prepare(&spec, &name).map_err(|message| {
                    RunnerError::unavailable_msg(format!(
                        "cannot prepare the job's cgroup: {message}"
                    ))
                })?;
                let child = Self::spawn_job(cmd, &spec, home, tmp)?;
                (name, cgroup, child, None)
            }
        };
        let environment_id = format!("local-job-{name}");
        // Held until the job is over: dropping it closes the forwarders.
        let _egress = match (&egress_to, child.id()) {
            (Some(destinations), Some(pid)) => {
                Some(egress::open(pid, destinations).await.map_err(|message| {
                    RunnerError::unavailable_msg(format!("cannot open the job's egress: {message}"))
                })?)
            }
            (Some(_), None) => {
                return Err(RunnerError::unavailable_msg(
                    "the job's sandbox exited before its egress was opened",
                ));
            }
            (None, _) => None,
        };
        tracing::debug!(environment = %environment_id, isolation = %self.level, pooled = message.is_some(), "local job starting");
        let mut run = self
            .supervise(child, message, started, &spec, cancel)
            .await?;
        let oom_kills = cgroup.oom_kills();
        let removed = tokio::task::spawn_blocking(move || cgroup.remove(KILL_CONFIRM))
            .await
            .unwrap_or_else(|e| Err(format!("cgroup removal panicked: {e}")));
        if let Err(e) = removed {
            run.notes.push(e);
        }
        if fits {
            // Back to full (one for this job, all of them after the first), once the job and
            // its cgroup are gone: started with the job, the new sandboxes compete with it for
            // the CPU, and a sandbox joining its cgroup holds the kernel's cgroup lock through
            // an RCU grace period (see `launch`), which the removal above would wait for.
            while refill(sandbox, limits) {}
        }
        if run.status
            == (JobStatus::Exited {
                code: launch::LAUNCH_FAILED,
            })
            && run.stderr.0.starts_with(launch::LAUNCH_MESSAGE)
        {
            return Err(RunnerError::unavailable_msg(format!(
                "the sandbox did not start: {}",
                run.stderr.0.trim()
            )));
        }
        if oom_kills > 0
            && matches!(
                run.status,
                JobStatus::Exited { .. } | JobStatus::Signaled { .. }
            )
        {
            run.status = JobStatus::OomKilled;
        }
        Ok(self.outcome(run, environment_id))
    }

    fn outcome(&self, run: Supervised, environment_id: String) -> JobOutcome {
        let teardown = Teardown {
            complete: run.notes.is_empty(),
            detail: run.notes.join("; "),
        };
        if !teardown.complete {
            tracing::warn!(environment = %environment_id, detail = %teardown.detail, "local job teardown incomplete");
        }
        JobOutcome {
            status: run.status,
            stdout: run.stdout.0,
            stderr: run.stderr.0,
            stdout_truncated: run.stdout.1,
            stderr_truncated: run.stderr.1,
            duration: run.duration,
            environment_id,
            isolation: self.level,
            teardown,
        }
    }
}

/// The job's environment, in the order it is applied (a later value of a name wins): a fixed
/// `PATH`, `HOME` and `TMPDIR`, then the spec's variables, then its secrets.
fn job_env<'a>(spec: &'a JobSpec, home: &'a Path, tmp: &'a Path) -> Vec<(&'a [u8], &'a [u8])> {
    let mut env: Vec<(&[u8], &[u8])> = vec![
        (b"PATH", DEFAULT_PATH.as_bytes()),
        (b"HOME", home.as_os_str().as_bytes()),
        (b"TMPDIR", tmp.as_os_str().as_bytes()),
    ];
    env.extend(spec.env.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    env.extend(
        spec.secret_env
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.expose())),
    );
    env
}

/// Starts one more sandbox for `limits` in the background, if the pool has room for it
/// (whether it had).
fn refill(sandbox: &Arc<launch::Sandbox>, limits: cgroup::CgroupLimits) -> bool {
    if !sandbox.pool.reserve(limits) {
        return false;
    }
    let sandbox = Arc::clone(sandbox);
    // On a runtime worker, not `spawn_blocking`, although creating a cgroup and spawning block
    // (briefly): bwrap's `--die-with-parent` kills the sandbox when the *thread* that spawned
    // it exits, and idle blocking-pool threads exit after a few seconds.
    tokio::spawn(async move {
        match sandbox.park(limits) {
            Ok(parked) => sandbox.pool.put(parked),
            Err(e) => {
                sandbox.pool.abandon();
                tracing::debug!(error = %e, "local runner: cannot pre-start a sandbox");
            }
        }
    });
    true
}

/// Reads a pipe to its end, keeping at most `cap` bytes.
fn capture(
    pipe: Option<impl AsyncRead + Unpin + Send + 'static>,
    cap: usize,
) -> JoinHandle<BoundedOutput> {
    tokio::spawn(async move {
        let mut out = BoundedOutput::new(cap);
        if let Some(mut pipe) = pipe {
            let mut chunk = vec![0u8; 16 * 1024];
            loop {
                match pipe.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.push(&chunk[..n]),
                }
            }
        }
        out
    })
}

/// Waits for a capture task, giving up (and noting it) after [`OUTPUT_DRAIN`].
async fn collect(
    task: JoinHandle<BoundedOutput>,
    cap: usize,
    notes: &mut Vec<String>,
    name: &str,
) -> (String, bool) {
    let abort = task.abort_handle();
    match tokio::time::timeout(OUTPUT_DRAIN, task).await {
        Ok(Ok(out)) => out.finish(),
        Ok(Err(e)) => {
            notes.push(format!("{name} capture failed: {e}"));
            BoundedOutput::new(cap).finish()
        }
        Err(_) => {
            abort.abort();
            notes.push(format!(
                "{name} still held open by a process that escaped the job's process group"
            ));
            BoundedOutput::new(cap).finish()
        }
    }
}

fn status_of(exit: ExitStatus) -> JobStatus {
    match (exit.code(), exit.signal()) {
        (Some(code), _) => JobStatus::Exited { code },
        (None, Some(signal)) => JobStatus::Signaled { signal },
        // Neither code nor signal cannot happen for a reaped child on Unix.
        (None, None) => JobStatus::Signaled { signal: 0 },
    }
}

/// SIGTERM to the group, up to `grace` for the leader to exit, then SIGKILL.
async fn stop(child: &mut Child, group: &tree::ProcessGroup, grace: Duration) {
    group.signal(Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        group.kill();
        let _ = child.wait().await;
    }
}

#[async_trait]
impl Runner for LocalRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo {
            backend: "local".into(),
            instance: self.instance.clone(),
            isolation: self.level,
        }
    }

    async fn run(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        self.check(&spec)?;
        match &self.sandbox {
            Some(sandbox) => self.run_namespaced(sandbox, spec, cancel).await,
            None => self.run_process(spec, cancel).await,
        }
    }

    /// Local jobs live on the host of the replica that ran them, out of another replica's
    /// reach. A sandboxed job needs no reaping: bubblewrap's `--die-with-parent` killed it
    /// with its gateway process, and the kernel removed its namespaces. A process-level job
    /// is not tied to its gateway: it runs on until its own timeout, and the teardown says so.
    async fn reap_abandoned(&self, job: &AbandonedJob) -> Result<Teardown, RunnerError> {
        if let Some(other) = job.other_backend("local") {
            return Ok(other);
        }
        Ok(match job.runner.isolation {
            IsolationLevel::Process | IsolationLevel::None => Teardown {
                complete: false,
                detail: "a process-level local job is not tied to its gateway process; \
                         it runs until its own timeout on the host that started it"
                    .to_owned(),
            },
            _ => Teardown {
                complete: true,
                detail: "the sandbox died with the gateway process that ran it \
                         (--die-with-parent)"
                    .to_owned(),
            },
        })
    }
}
