//! How a namespaced job is started ([`Sandbox`]: what it needs, found and probed once): a chain of small, well-known programs, each `exec`ing the
//! next, so that every step applies to the job and everything it starts, with no `unsafe` code
//! of ours (`unsafe_code` is forbidden workspace-wide, so `pre_exec` is out):
//!
//! ```text
//! /bin/sh -c LAUNCHER   root: fds 3 and 4 ← the seccomp programs; write own pid into every
//!                       cgroup.procs of the job's cgroup; then exec
//!   prlimit …           rlimits: open files, processes of the job's uid, CPU seconds; exec
//!   setpriv …           drop to the job's dedicated host uid/gid, no supplementary groups,
//!                       no new privileges; exec
//!   bwrap …             user/pid/net/ipc/uts/cgroup namespaces, uid 65534 inside (mapped to
//!                       the job's host uid, never to root), no capabilities, no further user
//!                       namespaces, read-only system and /proc/sys, sized tmpfs for /tmp and
//!                       /work, the seccomp programs; exec
//!     the job
//! ```
//!
//! The launcher script is a constant; every value reaches it as a positional parameter and is
//! only ever expanded quoted, so nothing of the spec (environment included, which passes through
//! to the job) can change what it does. A step that fails before the job runs exits with
//! [`LAUNCH_FAILED`] and a message prefixed with [`LAUNCH_MESSAGE`] on stderr.

use super::cgroup::{CgroupLimits, CgroupRoot, JobCgroup};
use super::job_ids::JobIds;
use super::seccomp::Profile;
use super::{DEFAULT_PATH, KILL_CONFIRM, LocalRunnerBuilder, sandbox};
use gateway_core::JobSpec;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::Command;

/// Exit code of the launcher when it could not start the job.
pub(crate) const LAUNCH_FAILED: i32 = 125;

/// Prefix of the launcher's own error messages on stderr.
pub(crate) const LAUNCH_MESSAGE: &str = "agent-gateway launcher:";

/// `$1`, `$2`: the seccomp programs; `$3`: how many cgroup.procs files follow; then the files;
/// then the command to `exec`.
const LAUNCHER: &str = r#"if ! true <"$1" 2>/dev/null || ! true <"$2" 2>/dev/null; then
  echo "agent-gateway launcher: cannot open the seccomp programs" >&2
  exit 125
fi
exec 3<"$1" 4<"$2"
n=$3
shift 3
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
        let sandbox = Self {
            programs,
            profile,
            ids,
            cgroups,
        };
        sandbox.probe()?;
        Ok(sandbox)
    }

    /// The job's cgroup and its launch command.
    pub(crate) fn prepare(
        &self,
        spec: &JobSpec,
        name: &str,
    ) -> Result<(JobCgroup, Command), String> {
        let limits = CgroupLimits {
            memory_bytes: spec.limits.memory_bytes,
            pids: spec.limits.pids.saturating_add(sandbox::SANDBOX_PROCESSES),
            cpu_millis: spec.limits.cpu_millis,
        };
        let cgroup = self.cgroups.create(name, limits)?;
        let (program, args) = argv(
            &self.programs,
            &self.profile,
            &cgroup,
            self.ids.take(),
            spec,
        );
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).current_dir("/");
        Ok((cgroup, Command::from(cmd)))
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
    pub(crate) prlimit: PathBuf,
    pub(crate) setpriv: PathBuf,
    pub(crate) bwrap: PathBuf,
}

impl Programs {
    /// Finds `sh`, `prlimit` and `setpriv` (util-linux); `bwrap` is given.
    pub(crate) fn find(bwrap: PathBuf) -> Result<Self, String> {
        let find = |name: &str| {
            sandbox::find_system_binary(name)
                .ok_or_else(|| format!("`{name}` not found in the system directories"))
        };
        Ok(Self {
            sh: find("sh")?,
            prlimit: find("prlimit")?,
            setpriv: find("setpriv")?,
            bwrap,
        })
    }
}

/// The whole argv of a namespaced job, launcher first.
pub(crate) fn argv(
    programs: &Programs,
    profile: &Profile,
    cgroup: &JobCgroup,
    job_id: u32,
    spec: &JobSpec,
) -> (PathBuf, Vec<OsString>) {
    let procs = cgroup.procs_files();
    let mut args: Vec<OsString> = vec![
        "-c".into(),
        LAUNCHER.into(),
        "agw-launch".into(),
        profile.deny.path().into(),
        profile.enosys.path().into(),
        procs.len().to_string().into(),
    ];
    args.extend(procs.into_iter().map(OsString::from));
    args.push(programs.prlimit.clone().into());
    args.extend(
        sandbox::namespaced_prlimit_args(&spec.limits)
            .into_iter()
            .map(OsString::from),
    );
    args.extend([
        programs.setpriv.clone().into(),
        format!("--reuid={job_id}").into(),
        format!("--regid={job_id}").into(),
        "--clear-groups".into(),
        "--no-new-privs".into(),
        "--".into(),
        programs.bwrap.clone().into(),
    ]);
    args.extend(sandbox::bwrap_args(spec));
    args.extend(spec.command.iter().map(OsString::from));
    (programs.sh.clone(), args)
}
