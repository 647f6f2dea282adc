//! One cgroup per namespaced job: memory (tmpfs included), pids and CPU rate limits that hold
//! for the whole job rather than per process, an out-of-memory count to report, and a handle
//! that kills what is left in it and removes it on every path.
//!
//! Both cgroup layouts are supported, found once when the runner is built:
//! - v2 (unified): one directory carries `memory`, `pids` and `cpu`. Controllers can only be
//!   handed to children of a cgroup that holds no processes itself (the "no internal processes"
//!   rule), so the jobs' parent must be the hierarchy's root or a delegated cgroup
//!   ([`LocalRunnerBuilder::cgroup_parent`](super::LocalRunnerBuilder::cgroup_parent)).
//! - v1: `memory`, `pids` and `cpu` each in their own hierarchy, one directory in each.
//!
//! By default job cgroups go under the gateway's own cgroup of each hierarchy, in a directory
//! `agent-gateway`, so that they count against whatever limits the gateway itself runs under.
//! The job joins its cgroup before it runs anything (the launcher writes its own pid into every
//! `cgroup.procs` and only then `exec`s the sandbox), so no process of the job ever runs outside.

use rustix::process::{Pid, Signal};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CFS period the CPU quota is expressed in (100 ms, the kernel's default).
const CPU_PERIOD_MICROS: u64 = 100_000;

/// How old an empty job cgroup must be before a runner removes it as a dead gateway's debris.
const REAP_AFTER: Duration = Duration::from_secs(60);

/// Name of the directory under which job cgroups are created.
const PARENT_NAME: &str = "agent-gateway";

/// Which layout the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// Separate `memory`, `pids`, `cpu` hierarchies.
    V1,
    /// The unified hierarchy.
    V2,
}

/// A controller the runner needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Controller {
    Memory,
    Pids,
    Cpu,
}

const CONTROLLERS: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Pids => "pids",
            Self::Cpu => "cpu",
        }
    }
}

/// A directory under which job cgroups are made, with the controllers it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parent {
    dir: PathBuf,
    controllers: Vec<Controller>,
}

/// Where job cgroups are created on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupRoot {
    version: Version,
    parents: Vec<Parent>,
}

/// The limits a job's cgroup enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CgroupLimits {
    /// Memory, page cache and tmpfs included, in bytes.
    pub(crate) memory_bytes: u64,
    /// Processes and threads, the sandbox's own two included.
    pub(crate) pids: u32,
    /// CPU rate in millicores.
    pub(crate) cpu_millis: u32,
}

/// One mount of a cgroup file system, from `/proc/self/mountinfo`.
#[derive(Debug)]
struct Mount<'a> {
    /// The path inside the hierarchy that is mounted (usually `/`).
    root: &'a str,
    mount_point: &'a str,
    /// `cgroup2`, or the v1 controllers this mount carries.
    v2: bool,
    controllers: Vec<&'a str>,
}

fn cgroup_mounts(mountinfo: &str) -> Vec<Mount<'_>> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional…] - fstype source super
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ');
            let root = left.nth(3)?;
            let mount_point = left.next()?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let super_options = right.nth(1).unwrap_or("");
            match fstype {
                "cgroup2" => Some(Mount {
                    root,
                    mount_point,
                    v2: true,
                    controllers: Vec::new(),
                }),
                "cgroup" => Some(Mount {
                    root,
                    mount_point,
                    v2: false,
                    controllers: super_options.split(',').collect(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// This process's path in the v2 hierarchy (`0::/path`) or in the v1 hierarchy carrying
/// `controller`, from `/proc/self/cgroup`.
fn own_path<'a>(proc_cgroup: &'a str, controller: Option<&str>) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        let hit = match controller {
            None => id == "0" && controllers.is_empty(),
            Some(c) => controllers.split(',').any(|x| x == c),
        };
        hit.then_some(path)
    })
}

/// `mount_point` + `path` made relative to the mount's `root`; `None` when this process's
/// cgroup lies outside what is mounted.
fn under_mount(mount: &Mount<'_>, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root)?
    };
    let relative = relative.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(Path::new(mount.mount_point).join(relative))
}

impl CgroupRoot {
    /// Finds where job cgroups go from the texts of `/proc/self/mountinfo` and
    /// `/proc/self/cgroup`. `parent` replaces the gateway's own cgroup (a path inside each
    /// hierarchy). Prefers v2 when the unified hierarchy offers every controller.
    fn locate(mountinfo: &str, proc_cgroup: &str, parent: Option<&Path>) -> Result<Self, String> {
        let mounts = cgroup_mounts(mountinfo);
        let base = |mount: &Mount<'_>, own: Option<&str>| -> Option<PathBuf> {
            match parent {
                Some(p) => under_mount(mount, &p.to_string_lossy()),
                None => under_mount(mount, own?).map(|d| d.join(PARENT_NAME)),
            }
        };
        if let Some(mount) = mounts.iter().find(|m| m.v2) {
            let available =
                std::fs::read_to_string(Path::new(mount.mount_point).join("cgroup.controllers"))
                    .unwrap_or_default();
            let offers = |c: Controller| available.split_whitespace().any(|x| x == c.name());
            if CONTROLLERS.iter().all(|c| offers(*c)) {
                let dir = base(mount, own_path(proc_cgroup, None)).ok_or_else(|| {
                    "cgroup v2: this process's cgroup is outside the mounted hierarchy".to_string()
                })?;
                return Ok(Self {
                    version: Version::V2,
                    parents: vec![Parent {
                        dir,
                        controllers: CONTROLLERS.to_vec(),
                    }],
                });
            }
        }
        let mut parents = Vec::new();
        for controller in CONTROLLERS {
            let name = controller.name();
            let mount = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.contains(&name))
                .ok_or_else(|| {
                    format!(
                        "no cgroup hierarchy offers the {name} controller (neither cgroup v2 with \
                         memory, pids and cpu, nor a v1 {name} hierarchy is mounted)"
                    )
                })?;
            let dir = base(mount, own_path(proc_cgroup, Some(name))).ok_or_else(|| {
                format!("cgroup v1 {name}: this process's cgroup is outside the mounted hierarchy")
            })?;
            parents.push(Parent {
                dir,
                controllers: vec![controller],
            });
        }
        Ok(Self {
            version: Version::V1,
            parents,
        })
    }

    /// Finds this host's layout and makes sure job cgroups can be created (the parents exist,
    /// v2 controllers are delegated to them), by creating and removing one.
    pub(crate) fn detect(parent: Option<&Path>) -> Result<Self, String> {
        let read =
            |p: &str| std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"));
        let root = Self::locate(
            &read("/proc/self/mountinfo")?,
            &read("/proc/self/cgroup")?,
            parent,
        )?;
        root.prepare()?;
        // A name of its own: runners are built concurrently (tests, several gateways).
        let probe = root.create(
            &format!("probe-{}", uuid::Uuid::now_v7().simple()),
            CgroupLimits {
                memory_bytes: 64 * 1024 * 1024,
                pids: 8,
                cpu_millis: 100,
            },
        )?;
        probe.remove(Duration::from_secs(1))?;
        root.reap();
        Ok(root)
    }

    /// Creates the parents; on v2, hands the controllers down to their children.
    fn prepare(&self) -> Result<(), String> {
        for parent in &self.parents {
            std::fs::create_dir_all(&parent.dir)
                .map_err(|e| format!("cannot create {}: {e}", parent.dir.display()))?;
            if self.version == Version::V2 {
                let enable: Vec<String> = parent
                    .controllers
                    .iter()
                    .map(|c| format!("+{}", c.name()))
                    .collect();
                let enable = enable.join(" ");
                // The parent's own parent must hand them to the parent first.
                if let Some(up) = parent.dir.parent() {
                    write(&up.join("cgroup.subtree_control"), &enable).map_err(|e| {
                        format!(
                            "cgroup v2: cannot delegate {enable} below {} ({e}); a cgroup that \
                             holds processes cannot hand controllers to children: run the \
                             gateway in a delegated cgroup and name a child of it with \
                             LocalRunnerBuilder::cgroup_parent",
                            up.display()
                        )
                    })?;
                }
                write(&parent.dir.join("cgroup.subtree_control"), &enable).map_err(|e| {
                    format!(
                        "cgroup v2: cannot enable {enable} in {}: {e}",
                        parent.dir.display()
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Removes empty job cgroups left by a gateway that died. A populated one belongs to a live
    /// job and refuses `rmdir`; one younger than [`REAP_AFTER`] may belong to a job another
    /// runner has just created and not yet entered, so it is left alone too.
    pub(crate) fn reap(&self) {
        for parent in &self.parents {
            let Ok(entries) = std::fs::read_dir(&parent.dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let old_enough = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= REAP_AFTER);
                if name.to_string_lossy().starts_with("job-") && old_enough {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }

    /// Creates the cgroup of one job (`job-<name>` in every parent) with its limits set.
    pub(crate) fn create(&self, name: &str, limits: CgroupLimits) -> Result<JobCgroup, String> {
        let mut job = JobCgroup {
            version: self.version,
            dirs: Vec::new(),
            removed: false,
        };
        for parent in &self.parents {
            let dir = parent.dir.join(format!("job-{name}"));
            std::fs::create_dir(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            job.dirs.push((dir.clone(), parent.controllers.clone()));
            for controller in &parent.controllers {
                for (file, value) in limit_files(self.version, *controller, limits) {
                    let path = dir.join(file);
                    if file.starts_with("memory.memsw") || file == "memory.swap.max" {
                        // Swap accounting is optional in the kernel; without it there is no
                        // file, and nothing to bound.
                        if !path.exists() {
                            continue;
                        }
                    }
                    write(&path, &value)
                        .map_err(|e| format!("cannot set {}: {e}", path.display()))?;
                }
            }
        }
        Ok(job)
    }
}

/// The files that carry `controller`'s share of `limits`, in the order they must be written.
fn limit_files(
    version: Version,
    controller: Controller,
    limits: CgroupLimits,
) -> Vec<(&'static str, String)> {
    let quota = (u64::from(limits.cpu_millis) * CPU_PERIOD_MICROS / 1000).max(1000);
    match (version, controller) {
        (_, Controller::Pids) => vec![("pids.max", limits.pids.to_string())],
        (Version::V1, Controller::Memory) => vec![
            ("memory.limit_in_bytes", limits.memory_bytes.to_string()),
            // memory + swap; must come after the memory limit, which it may not undercut.
            (
                "memory.memsw.limit_in_bytes",
                limits.memory_bytes.to_string(),
            ),
        ],
        (Version::V2, Controller::Memory) => vec![
            ("memory.max", limits.memory_bytes.to_string()),
            ("memory.swap.max", "0".to_string()),
        ],
        (Version::V1, Controller::Cpu) => vec![
            ("cpu.cfs_period_us", CPU_PERIOD_MICROS.to_string()),
            ("cpu.cfs_quota_us", quota.to_string()),
        ],
        (Version::V2, Controller::Cpu) => vec![("cpu.max", format!("{quota} {CPU_PERIOD_MICROS}"))],
    }
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::write(path, value)
}

/// The cgroup of one running job. Dropping it kills whatever is left in it and removes it (in
/// the background if its processes take a moment to go).
#[derive(Debug)]
pub(crate) struct JobCgroup {
    version: Version,
    dirs: Vec<(PathBuf, Vec<Controller>)>,
    removed: bool,
}

impl JobCgroup {
    /// The `cgroup.procs` files the launcher writes its pid into, one per hierarchy.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(d, _)| d.join("cgroup.procs"))
            .collect()
    }

    /// How many times the kernel's OOM killer killed a process of the job.
    pub(crate) fn oom_kills(&self) -> u64 {
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        self.dirs
            .iter()
            .filter(|(_, c)| c.contains(&Controller::Memory))
            .filter_map(|(d, _)| std::fs::read_to_string(d.join(file)).ok())
            .map(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }

    /// The pids still in the job's cgroups.
    fn members(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .procs_files()
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn kill_members(&self) {
        if self.version == Version::V2 {
            for (dir, _) in &self.dirs {
                // cgroup.kill (Linux 5.14+) kills atomically, forks in flight included.
                let kill = dir.join("cgroup.kill");
                if kill.exists() {
                    let _ = write(&kill, "1");
                }
            }
        }
        for pid in self.members() {
            if let Some(pid) = Pid::from_raw(pid) {
                // ESRCH: already gone.
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
    }

    /// Kills every process left in the job's cgroups and removes them, waiting up to `within`
    /// for the processes to be gone.
    pub(crate) fn remove(mut self, within: Duration) -> Result<(), String> {
        let result = self.try_remove(within);
        self.removed = result.is_ok();
        result
    }

    fn try_remove(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            self.kill_members();
            let mut left = Vec::new();
            for (dir, _) in &self.dirs {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => left.push(format!("{}: {e}", dir.display())),
                }
            }
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("cgroup not removed: {}", left.join("; ")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.kill_members();
        let dirs = std::mem::take(&mut self.dirs);
        let rest = JobCgroup {
            version: self.version,
            dirs,
            removed: true,
        };
        // Processes take a moment to exit after SIGKILL; do not block the dropping thread.
        std::thread::spawn(move || {
            let _ = rest.try_remove(Duration::from_secs(10));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP_V1: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn v1_job_cgroups_go_under_the_gateways_own_cgroup_of_each_hierarchy() {
        let root = CgroupRoot::locate(MOUNTINFO_V1, CGROUP_V1, None).unwrap();
        assert_eq!(root.version, Version::V1);
        let dirs: Vec<_> = root.parents.iter().map(|p| p.dir.clone()).collect();
        assert_eq!(
            dirs,
            [
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/agent-gateway"),
                PathBuf::from("/sys/fs/cgroup/pids/agent-gateway"),
                PathBuf::from("/sys/fs/cgroup/cpu/agent-gateway"),
            ]
        );
        let named =
            CgroupRoot::locate(MOUNTINFO_V1, CGROUP_V1, Some(Path::new("/ops/jobs"))).unwrap();
        assert_eq!(
            named.parents[1].dir,
            PathBuf::from("/sys/fs/cgroup/pids/ops/jobs")
        );
    }

    #[test]
    fn a_missing_controller_is_named() {
        let no_pids: String = MOUNTINFO_V1
            .lines()
            .filter(|l| !l.contains("pids"))
            .collect::<Vec<_>>()
            .join("\n");
        let err = CgroupRoot::locate(&no_pids, CGROUP_V1, None).unwrap_err();
        assert!(err.contains("pids"), "{err}");
    }

    #[test]
    fn a_cgroup_outside_the_mount_or_climbing_out_is_refused() {
        let mounted_sub = "31 30 0:27 /jail /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                           33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                           35 30 0:31 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        let err = CgroupRoot::locate(mounted_sub, "1:cpu:/other\n4:memory:/\n8:pids:/\n", None)
            .unwrap_err();
        assert!(err.contains("cpu"), "{err}");
        let err =
            CgroupRoot::locate(MOUNTINFO_V1, CGROUP_V1, Some(Path::new("/../../etc"))).unwrap_err();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn limits_are_written_in_each_layouts_files() {
        let limits = CgroupLimits {
            memory_bytes: 64 << 20,
            pids: 22,
            cpu_millis: 250,
        };
        assert_eq!(
            limit_files(Version::V1, Controller::Cpu, limits),
            [
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "25000".to_string())
            ]
        );
        assert_eq!(
            limit_files(Version::V2, Controller::Cpu, limits),
            [("cpu.max", "25000 100000".to_string())]
        );
        assert_eq!(
            limit_files(Version::V2, Controller::Memory, limits)[0],
            ("memory.max", (64u64 << 20).to_string())
        );
        assert_eq!(
            limit_files(Version::V1, Controller::Pids, limits),
            [("pids.max", "22".to_string())]
        );
        // The kernel refuses a quota under 1 ms.
        let tiny = CgroupLimits {
            cpu_millis: 1,
            ..limits
        };
        assert_eq!(
            limit_files(Version::V2, Controller::Cpu, tiny),
            [("cpu.max", "1000 100000".to_string())]
        );
    }

    /// The v2 path on a file tree shaped like cgroupfs: this machine's kernel mounts its
    /// controllers as v1, so the unified layout is checked against plain files.
    #[test]
    fn v2_creates_one_directory_with_every_limit_and_counts_oom_kills() {
        let fs = tempfile::tempdir().unwrap();
        let mount = fs.path().join("unified");
        std::fs::create_dir_all(mount.join("system.slice/gw")).unwrap();
        std::fs::write(
            mount.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let mountinfo = format!("36 30 0:32 / {} rw - cgroup2 cgroup2 rw\n", mount.display());
        let root = CgroupRoot::locate(
            &mountinfo,
            "0::/system.slice/gw\n",
            Some(Path::new("/system.slice/gw/jobs")),
        )
        .unwrap();
        assert_eq!(root.version, Version::V2);
        root.prepare().unwrap();
        assert_eq!(
            std::fs::read_to_string(mount.join("system.slice/gw/cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        let job = root
            .create(
                "t",
                CgroupLimits {
                    memory_bytes: 1 << 20,
                    pids: 5,
                    cpu_millis: 500,
                },
            )
            .unwrap();
        let dir = mount.join("system.slice/gw/jobs/job-t");
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.max")).unwrap(),
            "1048576"
        );
        assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap(), "5");
        assert_eq!(
            std::fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert!(
            !dir.join("memory.swap.max").exists(),
            "written although the kernel has none"
        );
        assert_eq!(job.procs_files(), [dir.join("cgroup.procs")]);
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n",
        )
        .unwrap();
        assert_eq!(job.oom_kills(), 2);
        // A real cgroupfs directory is empty to rmdir; this one holds the plain files.
        for f in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(f.unwrap().path()).unwrap();
        }
        job.remove(Duration::from_millis(100)).unwrap();
        assert!(!dir.exists());
    }
}
