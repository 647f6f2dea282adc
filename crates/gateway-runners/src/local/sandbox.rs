//! The arguments of the programs a local job is started with, and where they are found.
//!
//! - rlimits: util-linux's `prlimit --… --` sets the limits on itself and `exec`s the rest, so
//!   they cover the job and all its descendants (`Command::pre_exec`, the usual way, is
//!   `unsafe`, which this workspace forbids). util-linux is essential on Debian.
//! - namespaces: Debian's `bwrap` (bubblewrap) with a new user, pid, network, ipc, uts and
//!   cgroup namespace, no further user namespaces, a read-only root with read-only system
//!   directories and `/proc/sys`, sized private tmpfs for `/tmp` and the working directory,
//!   all capabilities dropped, the seccomp programs on fds 3 and 4, a new session (no
//!   controlling terminal to inject keystrokes into) and `--die-with-parent`. See
//!   [`launch`](super::launch) for the chain that starts it.
//!
//! Secrets travel in the environment of the spawned process only, never on a command line
//! (command lines are world-readable in `/proc`).

use gateway_core::{JobLimits, JobSpec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where the job's temporary directory appears inside the bwrap sandbox.
pub(crate) const SANDBOX_WORKDIR: &str = "/work";

/// The uid/gid the job runs as inside the bwrap user namespace (`nobody`); on the host it is
/// the job's dedicated id ([`job_ids`](super::job_ids)).
const SANDBOX_ID: &str = "65534";

/// Processes of bubblewrap itself in the job's cgroup and under its uid: the outer `bwrap`
/// and its init (pid 1 of the job's pid namespace). The job's own limit comes on top.
pub(crate) const SANDBOX_PROCESSES: u32 = 2;

/// Parts of `/proc` that control the kernel rather than describe the job: made read-only by
/// binding them over themselves (Docker's `readonlyPaths`). The rest of the job's `/proc` shows
/// its own pid namespace only.
const PROC_READ_ONLY: &[&str] = &[
    "/proc/sys",
    "/proc/sysrq-trigger",
    "/proc/irq",
    "/proc/bus",
    "/proc/fs",
];

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

/// The rlimits for a namespaced job. Memory is bounded by the job's cgroup, which counts all
/// its processes and its tmpfs together; RLIMIT_AS would only bound each process's address
/// space, and breaks runtimes that reserve more than they use (Go, JVMs). The process count
/// is per host uid, and every job has a uid of its own, so it bounds this job alone.
pub(crate) fn namespaced_prlimit_args(limits: &JobLimits) -> Vec<String> {
    vec![
        format!("--cpu={}", cpu_seconds(limits)),
        format!("--nofile={}", limits.open_files),
        format!("--nproc={}", limits.pids.saturating_add(SANDBOX_PROCESSES)),
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

/// `bwrap` arguments up to and including the final `--`; the job's argv follows. Expects the
/// seccomp programs on fds 3 and 4 (the launcher opens them).
pub(crate) fn bwrap_args(spec: &JobSpec) -> Vec<OsString> {
    let tmpfs_size = spec.limits.memory_bytes.to_string();
    let mut args: Vec<OsString> = [
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
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
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for path in PROC_READ_ONLY {
        args.extend(["--ro-bind-try".into(), (*path).into(), (*path).into()]);
    }
    args.extend(["--dev".into(), "/dev".into()]);
    // Both tmpfs are charged to the job's memory cgroup as well; the size keeps either from
    // taking all of it.
    for dir in ["/tmp", SANDBOX_WORKDIR] {
        args.extend([
            OsString::from("--size"),
            tmpfs_size.clone().into(),
            "--tmpfs".into(),
            dir.into(),
        ]);
    }
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
        // bwrap's root is a scratch tmpfs; make it (and so /etc) read-only too, last, after
        // every mount point has been created in it.
        OsString::from("--remount-ro"),
        "/".into(),
        "--chdir".into(),
        SANDBOX_WORKDIR.into(),
        "--add-seccomp-fd".into(),
        "3".into(),
        "--add-seccomp-fd".into(),
        "4".into(),
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

    #[test]
    fn namespaced_jobs_get_no_address_space_limit_and_room_for_bwrap() {
        let args = namespaced_prlimit_args(&JobLimits::default());
        assert!(!args.iter().any(|a| a.starts_with("--as")), "{args:?}");
        assert!(args.contains(&"--nproc=66".to_string()), "{args:?}");
    }

    #[test]
    fn bwrap_args_size_both_tmpfs_and_forbid_user_namespaces() {
        let mut spec = JobSpec::new(
            gateway_core::RequestId::new(),
            gateway_core::AgentId::new("agent:t").unwrap(),
            vec!["/bin/true".into()],
        );
        spec.limits.memory_bytes = 1234;
        let args: Vec<String> = bwrap_args(&spec)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--size 1234 --tmpfs /tmp"), "{joined}");
        assert!(joined.contains("--size 1234 --tmpfs /work"), "{joined}");
        assert!(
            joined.contains("--ro-bind-try /proc/sys /proc/sys"),
            "{joined}"
        );
        assert!(joined.contains("--disable-userns"), "{joined}");
        assert!(
            !joined.contains("--bind "),
            "no writable host path: {joined}"
        );
        assert_eq!(args.last().map(String::as_str), Some("--"));
    }
}
