//! The local sandbox runner: the embedded default, needing nothing but a Linux machine.
//!
//! Every job gets a fresh temporary directory (its working directory, removed afterwards), an
//! environment holding only the spec's variables (plus a fixed `PATH`, and `HOME`/`TMPDIR`
//! pointing into the sandbox, unless the spec sets them), its own process group, rlimits (CPU
//! time, address space, open files, processes) and a wall-clock timeout that kills the whole
//! tree: SIGTERM, a grace period, then SIGKILL.
//!
//! Two isolation levels, reported in every outcome:
//! - [`IsolationLevel::Namespaces`] when `bwrap` (Debian's `bubblewrap`) works here: no network
//!   (only a private loopback), read-only system directories, private `/tmp` and `/proc`, no view
//!   of the rest of the host (the gateway's files included), uid `nobody` in a user namespace, no
//!   capabilities. Killing bwrap tears the whole pid namespace down, so nothing survives a job.
//! - [`IsolationLevel::Process`] otherwise. This level does **not** isolate the network or the
//!   file system, and a job can leave its process group on purpose (`setsid`); callers that need
//!   more require [`IsolationLevel::Namespaces`] with [`LocalRunnerBuilder::require`] and the
//!   runner fails closed where bwrap is unusable.
//!
//! RLIMIT_NPROC is per user: it is ignored for root, and for another user it counts all of that
//! user's processes, so it is a coarse fork-bomb brake here; the Docker runner's pids cgroup is
//! the precise one. Landlock was considered and left out: bwrap's mount namespace already hides
//! the host, and Landlock would need a helper binary of our own inside the sandbox.

mod sandbox;
mod tree;

use crate::output::BoundedOutput;
use async_trait::async_trait;
use gateway_core::{
    IsolationLevel, JobOutcome, JobSpec, JobStatus, NetworkAccess, Runner, RunnerError, RunnerInfo,
    Teardown,
};
use rustix::process::Signal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The `PATH` a job gets unless its spec sets one: system directories only.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How long leftover output pipes may stay open after the job's processes are gone.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

/// How long the runner waits for a killed process tree to disappear.
const KILL_CONFIRM: Duration = Duration::from_secs(5);

/// Builds a [`LocalRunner`]; see [`LocalRunner::builder`].
#[derive(Debug, Clone)]
pub struct LocalRunnerBuilder {
    minimum: IsolationLevel,
    maximum: IsolationLevel,
    instance: Option<String>,
    grace: Duration,
    temp_root: Option<PathBuf>,
    bwrap: Option<PathBuf>,
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

    /// Directory under which per-job temporary directories are created (default: the system's
    /// temporary directory).
    pub fn temp_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_root = Some(dir.into());
        self
    }

    /// Use this `bwrap` binary instead of looking in the system directories.
    pub fn bwrap_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.bwrap = Some(path.into());
        self
    }

    /// Detects what this machine offers (runs bwrap once, blocking, to check it really works)
    /// and builds the runner with the strongest level allowed.
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
        let mut bwrap = None;
        let mut why_not = String::from("bwrap not allowed by configuration");
        if self.maximum >= IsolationLevel::Namespaces {
            match self
                .bwrap
                .clone()
                .or_else(|| sandbox::find_system_binary("bwrap"))
            {
                None => why_not = "bwrap (bubblewrap) is not installed".into(),
                Some(path) => match sandbox::probe_bwrap(&path) {
                    Ok(()) => bwrap = Some(path),
                    Err(e) => why_not = e,
                },
            }
        }
        let level = if bwrap.is_some() {
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
        if bwrap.is_none() {
            tracing::info!(reason = %why_not, "local runner: process-level isolation only");
        }
        Ok(LocalRunner {
            level,
            prlimit,
            bwrap,
            instance: self
                .instance
                .unwrap_or_else(|| format!("local-{}", uuid::Uuid::now_v7())),
            grace: self.grace,
            temp_root: self.temp_root,
        })
    }
}

/// Runs jobs as local processes, under bwrap when available. See the module docs.
#[derive(Debug, Clone)]
pub struct LocalRunner {
    level: IsolationLevel,
    prlimit: PathBuf,
    bwrap: Option<PathBuf>,
    instance: String,
    grace: Duration,
    temp_root: Option<PathBuf>,
}

impl LocalRunner {
    /// A builder with the defaults: strongest available level, at least process level.
    pub fn builder() -> LocalRunnerBuilder {
        LocalRunnerBuilder::default()
    }

    /// The strongest runner this machine supports (namespaces if bwrap works, else process).
    pub fn detect() -> Result<Self, RunnerError> {
        Self::builder().build()
    }

    /// The isolation level every job of this runner gets.
    pub fn isolation(&self) -> IsolationLevel {
        self.level
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
        if !matches!(spec.network, NetworkAccess::None) {
            return Err(RunnerError::Unsupported {
                message: "the local runner cannot enforce a network allowlist".into(),
            });
        }
        if !spec.mounts.is_empty() && self.bwrap.is_none() {
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
            self.bwrap.is_some() || sandbox::is_executable(Path::new(program))
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

    fn command(&self, spec: &JobSpec, workdir: &Path) -> Command {
        let mut cmd = Command::new(&self.prlimit);
        cmd.args(sandbox::prlimit_args(&spec.limits));
        let (home, tmp) = match &self.bwrap {
            Some(bwrap) => {
                cmd.arg(bwrap).args(sandbox::bwrap_args(spec, workdir));
                (
                    PathBuf::from(sandbox::SANDBOX_WORKDIR),
                    PathBuf::from("/tmp"),
                )
            }
            None => (workdir.to_path_buf(), workdir.to_path_buf()),
        };
        cmd.args(&spec.command)
            .current_dir(workdir)
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .env("HOME", home)
            .env("TMPDIR", tmp)
            .envs(&spec.env);
        for (key, value) in &spec.secret_env {
            // Secrets go to the job's environment only (never argv, never logs).
            cmd.env(key, std::ffi::OsStr::from_bytes(value.expose()));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        cmd
    }
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
        let mut builder = tempfile::Builder::new();
        builder.prefix("agw-job-");
        let workdir = match &self.temp_root {
            Some(root) => builder.tempdir_in(root),
            None => builder.tempdir(),
        }
        .map_err(|e| RunnerError::unavailable("cannot create the job's directory", e))?;
        let environment_id = workdir.path().display().to_string();
        let cap = spec.limits.max_output_bytes;

        let started = Instant::now();
        let mut child = self
            .command(&spec, workdir.path())
            .spawn()
            .map_err(|e| RunnerError::unavailable("cannot start the job", e))?;
        // Armed from here on: dropping this future SIGKILLs the whole group.
        let mut group = tree::ProcessGroup::new(child.id());
        let stdout = capture(child.stdout.take(), cap);
        let stderr = capture(child.stderr.take(), cap);
        tracing::debug!(environment = %environment_id, isolation = %self.level, "local job started");

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
        let group_gone = group.kill_and_confirm(KILL_CONFIRM).await;
        if !group_gone {
            notes.push("processes of the job's group survived SIGKILL".to_string());
        }
        let (stdout, stdout_truncated) = collect(stdout, cap, &mut notes, "stdout").await;
        let (stderr, stderr_truncated) = collect(stderr, cap, &mut notes, "stderr").await;
        if let Err(e) = workdir.close() {
            notes.push(format!("cannot remove the job's directory: {e}"));
        }
        let teardown = Teardown {
            complete: notes.is_empty(),
            detail: notes.join("; "),
        };
        if !teardown.complete {
            tracing::warn!(environment = %environment_id, detail = %teardown.detail, "local job teardown incomplete");
        }
        Ok(JobOutcome {
            status,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration,
            environment_id,
            isolation: self.level,
            teardown,
        })
    }
}
