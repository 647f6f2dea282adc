//! The arguments of the programs a local job is started with, and where they are found.
//!
//! - rlimits: at the process level, util-linux's `prlimit --… --` sets the limits on itself and
//!   `exec`s the rest, so they cover the job and all its descendants (`Command::pre_exec`, the
//!   usual way, is `unsafe`, which this workspace forbids; util-linux is essential on Debian).
//!   A namespaced job gets them ([`NamespacedRlimits`]) from the shell that already starts its
//!   chain, with `ulimit`: the launcher as root, or a pre-started sandbox's trampoline, which
//!   can only lower them.
//! - namespaces: Debian's `bwrap` (bubblewrap) with a new user, pid, network, ipc, uts and
//!   cgroup namespace, no further user namespaces, a read-only root with read-only system
//!   directories and `/proc/sys`, sized private tmpfs for `/tmp` and the working directory,
//!   all capabilities dropped, the seccomp programs on fds 3 and 4, a new session (no
//!   controlling terminal to inject keystrokes into) and `--die-with-parent`. See
//!   [`launch`](super::launch) for the chain that starts it.
//! - mounts cost: every `--ro-bind` is a bind, a read-only remount and a scan of the mount
//!   table by bubblewrap. On a merged-/usr system `/bin`, `/sbin`, `/lib`, `/lib64` are
//!   symlinks into `/usr`, so the sandbox gets the same symlinks ([`SystemDirs`]) instead of
//!   four more binds of the same directories: the view is identical, and about 0.5 ms cheaper
//!   per job here.
//!
//! Secrets travel in the environment of the spawned process only, never on a command line
//! (command lines are world-readable in `/proc`).

use gateway_core::JobLimits;
use gateway_core::runner::ReadOnlyMount;
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

/// The rlimits of a namespaced job (set with the shell's `ulimit`, soft and hard alike).
/// Memory is bounded by the job's cgroup, which counts all its processes and its tmpfs
/// together; RLIMIT_AS would only bound each process's address space, and breaks runtimes that
/// reserve more than they use (Go, JVMs). The process count is per host uid, and every job has
/// a uid of its own, so it bounds this job alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NamespacedRlimits {
    /// RLIMIT_CPU, seconds.
    pub(crate) cpu_seconds: u64,
    /// RLIMIT_NOFILE.
    pub(crate) open_files: u64,
    /// RLIMIT_NPROC, the sandbox's own processes included.
    pub(crate) processes: u64,
}

impl NamespacedRlimits {
    pub(crate) fn of(limits: &JobLimits) -> Self {
        Self {
            cpu_seconds: cpu_seconds(limits),
            open_files: u64::from(limits.open_files),
            processes: u64::from(limits.pids.saturating_add(SANDBOX_PROCESSES)),
        }
    }

    /// `cpu files processes`, the launcher's and the trampoline's notation.
    pub(crate) fn words(&self) -> [String; 3] {
        [
            self.cpu_seconds.to_string(),
            self.open_files.to_string(),
            self.processes.to_string(),
        ]
    }
}

/// RLIMIT_CPU counts CPU seconds, while the spec gives a rate (millicores): a job may use the
/// rate for the whole wall-clock limit, plus one second of slack for start-up.
pub(crate) fn cpu_seconds(limits: &JobLimits) -> u64 {
    let millis = u128::from(limits.cpu_millis) * limits.timeout.as_millis();
    u64::try_from(millis.div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

/// How each of [`SYSTEM_DIRS`] appears in the sandbox, found once when the runner is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SystemDirs {
    entries: Vec<SystemDir>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SystemDir {
    /// Bound read-only (skipped by bwrap when absent).
    Bind(&'static str),
    /// A symlink on the host whose target lies in another bound system directory: the same
    /// symlink in the sandbox shows the same files without a mount of its own.
    Symlink { path: &'static str, target: PathBuf },
}

impl SystemDirs {
    /// Looks at this host's system directories.
    pub(crate) fn detect() -> Self {
        Self::from_links(|path| std::fs::read_link(path).ok())
    }

    /// `read_link` answers what a path is a symlink to (`None`: not a symlink).
    fn from_links(read_link: impl Fn(&str) -> Option<PathBuf>) -> Self {
        let entries = SYSTEM_DIRS
            .iter()
            .map(|path| match read_link(path) {
                Some(target) if Self::inside_bound(path, &target, &read_link) => {
                    SystemDir::Symlink { path, target }
                }
                _ => SystemDir::Bind(path),
            })
            .collect();
        Self { entries }
    }

    /// Whether `target` (of the symlink `path`) resolves, without `..`, into a system
    /// directory that is itself bound (not a symlink).
    fn inside_bound(
        path: &str,
        target: &Path,
        read_link: &impl Fn(&str) -> Option<PathBuf>,
    ) -> bool {
        use std::path::Component;
        if target
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return false;
        }
        let absolute = Path::new(path)
            .parent()
            .unwrap_or(Path::new("/"))
            .join(target);
        SYSTEM_DIRS
            .iter()
            .any(|dir| *dir != path && read_link(dir).is_none() && absolute.starts_with(dir))
    }

    fn args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        for entry in &self.entries {
            match entry {
                SystemDir::Bind(path) => {
                    args.extend(["--ro-bind-try".into(), (*path).into(), (*path).into()])
                }
                SystemDir::Symlink { path, target } => args.extend([
                    "--symlink".into(),
                    target.clone().into_os_string(),
                    (*path).into(),
                ]),
            }
        }
        args
    }
}

/// `bwrap` arguments up to and including the final `--`; the job's argv (or the trampoline)
/// follows. They depend on the memory limit (the size of each tmpfs) and the read-only mounts.
/// Expects the seccomp programs on fds 3 and 4 (the launcher opens them).
pub(crate) fn sandbox_args(
    memory_bytes: u64,
    mounts: &[ReadOnlyMount],
    system: &SystemDirs,
) -> Vec<OsString> {
    let tmpfs_size = memory_bytes.to_string();
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
    args.extend(system.args());
    for path in ETC_FILES {
        args.extend(["--ro-bind-try".into(), (*path).into(), (*path).into()]);
    }
    for mount in mounts {
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
    use gateway_core::JobSpec;
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
        let limits = NamespacedRlimits::of(&JobLimits::default());
        assert_eq!(limits.words(), ["61", "256", "66"]);
    }

    #[test]
    fn merged_usr_links_become_symlinks_and_anything_else_a_bind() {
        let merged = |path: &str| match path {
            "/bin" => Some(PathBuf::from("usr/bin")),
            "/lib64" => Some(PathBuf::from("usr/lib64")),
            // Leaves the bound directories: must stay a bind.
            "/sbin" => Some(PathBuf::from("../opt/sbin")),
            "/lib" => Some(PathBuf::from("/opt/lib")),
            _ => None,
        };
        let args: Vec<String> = SystemDirs::from_links(merged)
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--ro-bind-try /usr /usr"), "{joined}");
        assert!(joined.contains("--symlink usr/bin /bin"), "{joined}");
        assert!(joined.contains("--symlink usr/lib64 /lib64"), "{joined}");
        assert!(joined.contains("--ro-bind-try /sbin /sbin"), "{joined}");
        assert!(joined.contains("--ro-bind-try /lib /lib"), "{joined}");
        let unmerged = SystemDirs::from_links(|_| None).args();
        assert_eq!(unmerged.len(), 3 * SYSTEM_DIRS.len());
    }

    #[test]
    fn sandbox_args_size_both_tmpfs_and_forbid_user_namespaces() {
        let mut spec = JobSpec::new(
            gateway_core::RequestId::new(),
            gateway_core::AgentId::new("agent:t").unwrap(),
            vec!["/bin/true".into()],
        );
        spec.limits.memory_bytes = 1234;
        let args: Vec<String> = sandbox_args(
            spec.limits.memory_bytes,
            &spec.mounts,
            &SystemDirs::detect(),
        )
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
