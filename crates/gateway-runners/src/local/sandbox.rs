//! How a local job is launched, without any `unsafe` in our code (`unsafe_code` is forbidden
//! workspace-wide, and `Command::pre_exec`, the usual way to set rlimits in the child, is unsafe):
//!
//! - rlimits: the job runs under util-linux's `prlimit --cpu= --as= --nofile= --nproc= --`,
//!   which sets the limits on itself and `exec`s the job, so the limits cover the job and all
//!   its descendants and cost one extra `exec`. util-linux is essential on Debian.
//! - own process group: std's safe `CommandExt::process_group(0)`; the runner kills the group.
//! - namespaces: Debian's `bwrap` (bubblewrap) with a new user, pid, network, ipc, uts and
//!   cgroup namespace, a read-only root with read-only system directories, a private `/tmp`, the job's temporary
//!   directory as the only writable host path, all capabilities dropped, a new session (no
//!   controlling terminal to inject keystrokes into) and `--die-with-parent`.
//!
//! Secrets travel in the environment of the spawned process only, never on a command line
//! (command lines are world-readable in `/proc`).

use gateway_core::{JobLimits, JobSpec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where the job's temporary directory appears inside the bwrap sandbox.
pub(crate) const SANDBOX_WORKDIR: &str = "/work";

/// The uid/gid the job runs as inside the bwrap user namespace (`nobody`).
const SANDBOX_ID: &str = "65534";

/// System directories made visible read-only inside the sandbox (skipped when absent). On a
/// merged-/usr system `/bin`, `/lib`, … are symlinks and bind the same directories.
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// The few files of `/etc` programs need to start; the rest of `/etc` (credentials, the
/// gateway's configuration) stays invisible.
const ETC_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/alternatives",
];

/// The rlimits for a job, as `prlimit` arguments.
pub(crate) fn prlimit_args(limits: &JobLimits) -> Vec<String> {
    vec![
        format!("--cpu={}", cpu_seconds(limits)),
        format!("--as={}", limits.memory_bytes),
        format!("--nofile={}", limits.open_files),
        format!("--nproc={}", limits.pids),
        "--".into(),
    ]
}

/// RLIMIT_CPU counts CPU seconds, while the spec gives a rate (millicores): a job may use the
/// rate for the whole wall-clock limit, plus one second of slack for start-up.
pub(crate) fn cpu_seconds(limits: &JobLimits) -> u64 {
    let millis = u128::from(limits.cpu_millis) * limits.timeout.as_millis();
    u64::try_from(millis.div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// `bwrap` arguments up to and including the final `--`; the job's argv follows.
pub(crate) fn bwrap_args(spec: &JobSpec, workdir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        SANDBOX_ID,
        "--gid",
        SANDBOX_ID,
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
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for path in SYSTEM_DIRS.iter().chain(ETC_FILES) {
        args.extend(["--ro-bind-try".into(), (*path).into(), (*path).into()]);
    }
    for mount in &spec.mounts {
        args.extend([
            OsString::from("--ro-bind"),
            mount.host_path.clone().into_os_string(),
            mount.job_path.clone().into_os_string(),
        ]);
    }
    args.extend([
        OsString::from("--bind"),
        workdir.as_os_str().to_owned(),
        SANDBOX_WORKDIR.into(),
        // bwrap's root is a scratch tmpfs; make it (and so /etc) read-only too, last, after
        // every mount point has been created in it.
        "--remount-ro".into(),
        "/".into(),
        "--chdir".into(),
        SANDBOX_WORKDIR.into(),
        "--".into(),
    ]);
    args
}

/// Finds an executable by name in the usual system directories (not the gateway's `PATH`,
/// which an attacker-influenced environment could point elsewhere).
pub(crate) fn find_system_binary(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is a regular file with an execute bit.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a trivial job under exactly the sandbox a real job gets, once: bwrap may be installed
/// but unusable (no user namespaces, seccomp'd container, …).
pub(crate) fn probe_bwrap(bwrap: &Path) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("agw-probe-")
        .tempdir()
        .map_err(|e| format!("cannot create a probe directory: {e}"))?;
    let spec = JobSpec::new(
        gateway_core::RequestId::new(),
        gateway_core::AgentId::new("agent:probe").map_err(|e| e.to_string())?,
        vec!["/bin/sh".into(), "-c".into(), "exit 0".into()],
    );
    let output = std::process::Command::new(bwrap)
        .args(bwrap_args(&spec, dir.path()))
        .args(&spec.command)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bwrap.display()))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "{} failed ({}): {}",
            bwrap.display(),
            output.status,
            stderr.chars().take(300).collect::<String>().trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn cpu_budget_is_rate_times_wall_clock_plus_slack() {
        let limits = JobLimits {
            cpu_millis: 500,
            timeout: Duration::from_secs(10),
            ..JobLimits::default()
        };
        assert_eq!(cpu_seconds(&limits), 6);
        let tiny = JobLimits {
            cpu_millis: 1,
            timeout: Duration::from_millis(1),
            ..JobLimits::default()
        };
        assert_eq!(cpu_seconds(&tiny), 2);
    }

    #[test]
    fn prlimit_args_carry_every_limit() {
        let args = prlimit_args(&JobLimits::default());
        assert!(args.contains(&format!("--as={}", 512 * 1024 * 1024)));
        assert!(args.contains(&"--nofile=256".to_string()));
        assert!(args.contains(&"--nproc=64".to_string()));
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}
