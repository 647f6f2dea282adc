//! How a namespaced job is started ([`Sandbox`]: what it needs, found and probed once): a chain
//! of small, well-known programs, each `exec`ing the next, so that every step applies to the job
//! and everything it starts, with no `unsafe` code of ours (`unsafe_code` is forbidden
//! workspace-wide, so `pre_exec` is out):
//!
//! ```text
//! /bin/sh -c LAUNCHER   root: fds 3 and 4 ← the seccomp programs; rlimits with `ulimit` (open
//!                       files, processes of the job's uid, CPU seconds); write own pid into
//!                       every cgroup.procs of the job's cgroup; then exec
//!   setpriv …           drop to the job's dedicated host uid/gid, no supplementary groups,
//!                       no new privileges; exec
//!   bwrap …             user/pid/net/ipc/uts/cgroup namespaces, uid 65534 inside (mapped to
//!                       the job's host uid, never to root), no capabilities, no further user
//!                       namespaces, read-only system and /proc/sys, sized tmpfs for /tmp and
//!                       /work, the seccomp programs; exec
//!     the job           (direct launch), or
//!     /bin/sh -c TRAMPOLINE   (a pre-started sandbox, see `pool`): waits for the job on
//!                       stdin, lowers the rlimits to the job's, sets its environment; exec
//!       the job
//! ```
//!
//! The launcher script is a constant; every value reaches it as a positional parameter and is
//! only ever expanded quoted, so nothing of the spec (environment included, which passes through
//! to the job) can change what it does. A step that fails before the job runs exits with
//! [`LAUNCH_FAILED`] and a message prefixed with [`LAUNCH_MESSAGE`] on stderr.
//!
//! Where the time of a trivial job goes (`/bin/sh -c 'exit 0'`, medians on the 2-core VM this
//! was measured on, with other builds running; each step is the difference between two chains):
//!
//! | step | cost |
//! |---|---|
//! | fork + exec of a small program (posix_spawn from the gateway) | ≈ 0.8 ms |
//! | the launcher shell itself | ≈ 0.65 ms |
//! | joining the cgroup: the first `cgroup.procs` write of a job | ≈ 8 ms in half the jobs, else 0.3 ms |
//! | `prlimit` (an exec of its own until the launcher's `ulimit` took over) | ≈ 0.8 ms |
//! | `setpriv` | ≈ 1.4 ms |
//! | bwrap: exec, user namespace, first mounts | ≈ 2.2 ms |
//! | bwrap: pid/ipc/uts/cgroup/net namespaces | ≈ 1.2 ms |
//! | bwrap: `/proc` and its five read-only binds | ≈ 0.4 ms |
//! | bwrap: `--dev` | ≈ 1.0 ms |
//! | bwrap: the two tmpfs | ≈ 0.2 ms |
//! | bwrap: system, `/etc` binds and the read-only root (four fewer binds with symlinks) | ≈ 1.6 → 1.1 ms |
//! | cgroup create (3 dirs, 5 limit files) / remove (3 `rmdir`) | ≈ 0.2 / 0.15 ms |
//!
//! With a pre-started sandbox, what is left on the job's path is the trampoline reading its
//! message and `exec`ing the job, the job, the sandbox's exit, and the cgroup's removal:
//! ≈ 1.7–3.2 ms from message to exit for `exit 0` (bwrap and the trampoline alone, no runner),
//! ≈ 2.5–3.5 ms through the runner, against ≈ 9–17 ms for bwrap started with the job.
//!
//! The cgroup join dominates: moving a process between cgroups takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period (≈ 8 ms at
//! `HZ=250`) unless another move happened within the last one. Only a process that is already
//! in the job's cgroup avoids it, which is why sandboxes are started ahead of their jobs
//! (`pool`); that also takes the launcher, `setpriv` and every bwrap step off the job's path,
//! at the price of one more shell (the trampoline) on it. (cgroup2's `favordynmods` mount option
//! makes every move cheap, at a small cost to every `fork`; that is the operator's choice, the
//! runner does not remount anything.)

use super::cgroup::{CgroupLimits, CgroupRoot, JobCgroup};
use super::job_ids::JobIds;
use super::pool::{Parked, Pool};
use super::sandbox::{NamespacedRlimits, SystemDirs};
use super::seccomp::Profile;
use super::trampoline::{self, Fit};
use super::{DEFAULT_PATH, KILL_CONFIRM, LocalRunnerBuilder, sandbox};
use gateway_core::runner::ReadOnlyMount;
use gateway_core::{JobLimits, JobSpec};
use rustix::process::Resource;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::Command;

/// Exit code of the launcher when it could not start the job.
pub(crate) const LAUNCH_FAILED: i32 = 125;

/// Prefix of the launcher's own error messages on stderr.
pub(crate) const LAUNCH_MESSAGE: &str = "agent-gateway launcher:";

/// `$1`, `$2`: the seccomp programs; `$3`, `$4`, `$5`: the rlimits (CPU seconds, open files,
/// processes; `-` for a pre-started sandbox, whose trampoline sets them); `$6`: how many
/// cgroup.procs files follow; then the files; then the command to `exec`. `ulimit` without
/// `-H`/`-S` sets the soft and the hard limit, and as root it may raise them.
const LAUNCHER: &str = r#"if ! true <"$1" 2>/dev/null || ! true <"$2" 2>/dev/null; then
  echo "agent-gateway launcher: cannot open the seccomp programs" >&2
  exit 125
fi
exec 3<"$1" 4<"$2"
if [ "$3" != - ]; then
  if ! { ulimit -t "$3" && ulimit -n "$4" && ulimit -p "$5"; } 2>/dev/null; then
    echo "agent-gateway launcher: cannot set the job's rlimits" >&2
    exit 125
  fi
fi
n=$6
shift 6
while [ "$n" -gt 0 ]; do
  if ! echo 0 2>/dev/null >"$1"; then
    echo "agent-gateway launcher: cannot join the job's cgroup ($1)" >&2
    exit 125
  fi
  shift
  n=$((n - 1))
done
exec "$@"
"#;

/// Everything namespaced jobs need, found and checked once when the runner is built.
#[derive(Debug)]
pub(crate) struct Sandbox {
    programs: Programs,
    profile: Profile,
    ids: JobIds,
    cgroups: CgroupRoot,
    system: SystemDirs,
    /// The gateway's hard limits for CPU seconds, open files and processes (`None`:
    /// unlimited), which a pre-started sandbox inherits and its trampoline can only lower.
    hard_limits: [Option<u64>; 3],
    /// Sandboxes started ahead of their jobs.
    pub(crate) pool: Pool,
    /// Jobs that ran in one of them.
    pub(crate) pooled_jobs: std::sync::atomic::AtomicU64,
}

impl Sandbox {
    /// Every part, or the first reason one is missing.
    pub(crate) fn detect(config: &LocalRunnerBuilder) -> Result<Self, String> {
        let bwrap = config
            .bwrap
            .clone()
            .or_else(|| sandbox::find_system_binary("bwrap"))
            .ok_or("bwrap (bubblewrap) is not installed")?;
        if !sandbox::is_executable(&bwrap) {
            return Err(format!(
                "bwrap (bubblewrap) not found at {}",
                bwrap.display()
            ));
        }
        let programs = Programs::find(bwrap)?;
        let ids = JobIds::new(config.job_ids.0, config.job_ids.1)?;
        let cgroups = CgroupRoot::detect(config.cgroup_parent.as_deref())?;
        let profile = Profile::compile()?;
        let hard_limits = [Resource::Cpu, Resource::Nofile, Resource::Nproc]
            .map(|r| rustix::process::getrlimit(r).maximum);
        let sandbox = Self {
            programs,
            profile,
            ids,
            cgroups,
            system: SystemDirs::detect(),
            hard_limits,
            pool: Pool::new(config.pool),
            pooled_jobs: std::sync::atomic::AtomicU64::new(0),
        };
        sandbox.probe()?;
        Ok(sandbox)
    }

    /// The cgroup limits of a job with `limits` (the sandbox's own processes included).
    pub(crate) fn cgroup_limits(limits: &JobLimits) -> CgroupLimits {
        CgroupLimits {
            memory_bytes: limits.memory_bytes,
            pids: limits.pids.saturating_add(sandbox::SANDBOX_PROCESSES),
            cpu_millis: limits.cpu_millis,
        }
    }

    /// Whether `spec`'s job can run in a pre-started sandbox.
    pub(crate) fn fit(&self, spec: &JobSpec) -> Fit {
        trampoline::fit(spec, NamespacedRlimits::of(&spec.limits), self.hard_limits)
    }

    /// The job's cgroup and its launch command (the direct launch: the job's argv is bwrap's).
    pub(crate) fn prepare(
        &self,
        spec: &JobSpec,
        name: &str,
    ) -> Result<(JobCgroup, Command), String> {
        let cgroup = self
            .cgroups
            .create(name, Self::cgroup_limits(&spec.limits))?;
        let launch = Launch {
            rlimits: Some(NamespacedRlimits::of(&spec.limits)),
            memory_bytes: spec.limits.memory_bytes,
            mounts: &spec.mounts,
            command: &spec.command,
        };
        let (program, args) = self.argv(&cgroup, self.ids.take(), &launch);
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).current_dir("/");
        Ok((cgroup, Command::from(cmd)))
    }

    /// Starts a sandbox for a job not known yet, whose cgroup enforces `limits`: the whole
    /// chain runs now, up to the trampoline waiting on its stdin (see [`trampoline`]).
    pub(crate) fn park(&self, limits: CgroupLimits) -> Result<Parked, String> {
        self.park_with(limits, None, &[])
    }

    /// Starts a sandbox for one known job, with its mounts and its rlimits set by the launcher
    /// (the trampoline then sets the same): for a job that needs its sandbox in place before
    /// it runs (egress forwarders, see `egress`) and may not fit a pooled one.
    pub(crate) fn park_for(&self, spec: &JobSpec) -> Result<Parked, String> {
        self.park_with(
            Self::cgroup_limits(&spec.limits),
            Some(NamespacedRlimits::of(&spec.limits)),
            &spec.mounts,
        )
    }

    fn park_with(
        &self,
        limits: CgroupLimits,
        rlimits: Option<NamespacedRlimits>,
        mounts: &[ReadOnlyMount],
    ) -> Result<Parked, String> {
        let name = uuid::Uuid::now_v7().simple().to_string();
        let cgroup = self.cgroups.create(&name, limits)?;
        let command: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            trampoline::TRAMPOLINE.into(),
            "agw-job".into(),
        ];
        let launch = Launch {
            rlimits,
            memory_bytes: limits.memory_bytes,
            mounts,
            command: &command,
        };
        let (program, args) = self.argv(&cgroup, self.ids.take(), &launch);
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .current_dir("/")
            .env_clear()
            .env("PATH", DEFAULT_PATH);
        let mut cmd = Command::from(cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a sandbox: {e}"))?;
        Ok(Parked::new(child, cgroup, name, limits))
    }

    /// Runs `exit 0` through the whole chain once: bwrap may be installed but unusable (no
    /// user namespaces, a seccomp'd container, too old for `--disable-userns`, …).
    fn probe(&self) -> Result<(), String> {
        let spec = JobSpec::new(
            gateway_core::RequestId::new(),
            gateway_core::AgentId::new("agent:probe").map_err(|e| e.to_string())?,
            vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
        );
        let (cgroup, cmd) =
            self.prepare(&spec, &format!("probe-{}", uuid::Uuid::now_v7().simple()))?;
        let mut cmd = cmd.into_std();
        let output = cmd
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.programs.sh.display()))?;
        let removed = cgroup.remove(KILL_CONFIRM);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "the sandbox does not start here ({}): {}",
                output.status,
                stderr.chars().take(300).collect::<String>().trim()
            ));
        }
        removed
    }
}

/// The programs of the chain, found once in the system directories.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    pub(crate) sh: PathBuf,
    pub(crate) setpriv: PathBuf,
    pub(crate) bwrap: PathBuf,
}

impl Programs {
    /// Finds `sh` and `setpriv` (util-linux); `bwrap` is given.
    pub(crate) fn find(bwrap: PathBuf) -> Result<Self, String> {
        let find = |name: &str| {
            sandbox::find_system_binary(name)
                .ok_or_else(|| format!("`{name}` not found in the system directories"))
        };
        Ok(Self {
            sh: find("sh")?,
            setpriv: find("setpriv")?,
            bwrap,
        })
    }
}

/// What one launch runs.
struct Launch<'a> {
    /// Set by the launcher (root); `None` leaves them to the trampoline.
    rlimits: Option<NamespacedRlimits>,
    memory_bytes: u64,
    mounts: &'a [ReadOnlyMount],
    command: &'a [String],
}

impl Sandbox {
    /// The whole argv of a launch, launcher first.
    fn argv(
        &self,
        cgroup: &JobCgroup,
        job_id: u32,
        launch: &Launch<'_>,
    ) -> (PathBuf, Vec<OsString>) {
        let procs = cgroup.procs_files();
        let mut args: Vec<OsString> = vec![
            "-c".into(),
            LAUNCHER.into(),
            "agw-launch".into(),
            self.profile.deny.path().into(),
            self.profile.enosys.path().into(),
        ];
        match launch.rlimits {
            Some(limits) => args.extend(limits.words().map(OsString::from)),
            None => args.extend(["-", "-", "-"].map(OsString::from)),
        }
        args.push(procs.len().to_string().into());
        args.extend(procs.into_iter().map(OsString::from));
        args.extend([
            self.programs.setpriv.clone().into(),
            format!("--reuid={job_id}").into(),
            format!("--regid={job_id}").into(),
            "--clear-groups".into(),
            "--no-new-privs".into(),
            "--".into(),
            self.programs.bwrap.clone().into(),
        ]);
        args.extend(sandbox::sandbox_args(
            launch.memory_bytes,
            launch.mounts,
            &self.system,
        ));
        args.extend(launch.command.iter().map(OsString::from));
        (self.programs.sh.clone(), args)
    }
}
