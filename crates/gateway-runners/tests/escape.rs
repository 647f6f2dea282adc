//! Escape probes: what a hostile job tries against the host, as tests. Each probe is one
//! function run against the local sandbox (namespaces level, as root), once launched directly
//! and once in a sandbox started ahead of the job (the local runner's pool), and, where dockerd
//! is up (`GATEWAY_TEST_DOCKER_IMAGE`), against the Docker runner, so every way a job can start
//! answers the same questions. Probes never write a host setting they could damage: a sysctl is written back
//! with its own value, except `fs/lease-break-time`, which the test restores if it changed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gateway_core::{
    AgentId, CancellationToken, IsolationLevel, JobOutcome, JobSpec, JobStatus, RequestId, Runner,
};
use gateway_runners::LocalRunner;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// What a probe needs to know about the backend under test.
struct Target {
    runner: Arc<dyn Runner>,
    image: Option<String>,
    /// Whether the job runs in a user namespace of its own (the local sandbox) rather than as
    /// a plain non-root host user (Docker).
    user_namespace: bool,
    /// The Docker runner's instance label, to look for containers left behind.
    docker_instance: Option<String>,
    /// The local runner whose jobs must all run in pre-started sandboxes.
    pooled: Option<LocalRunner>,
}

impl Target {
    fn sh(&self, script: &str) -> JobSpec {
        let mut spec = JobSpec::new(
            RequestId::new(),
            AgentId::new("agent:probe").unwrap(),
            vec!["/bin/sh".into(), "-c".into(), script.into()],
        );
        spec.image = self.image.clone();
        spec.limits.timeout = Duration::from_secs(30);
        spec
    }

    async fn run(&self, spec: JobSpec) -> JobOutcome {
        let before = self.warm(&spec).await;
        let out = self
            .runner
            .run(spec, CancellationToken::new())
            .await
            .unwrap();
        self.was_pooled(before);
        out
    }

    /// For the pooled target: a sandbox for `spec`'s limits started and ready; the count of
    /// pooled jobs before this one.
    async fn warm(&self, spec: &JobSpec) -> u64 {
        let Some(runner) = &self.pooled else { return 0 };
        assert!(
            runner.prestart(&spec.limits, Duration::from_secs(10)).await,
            "no sandbox could be started ahead of the job"
        );
        runner.pooled_jobs()
    }

    /// For the pooled target: the job just run used a pre-started sandbox.
    fn was_pooled(&self, before: u64) {
        if let Some(runner) = &self.pooled {
            assert_eq!(
                runner.pooled_jobs(),
                before + 1,
                "the job was launched directly"
            );
        }
    }
}

/// The local sandbox at namespaces level, every job launched directly, or `None` (skip)
/// outside CI when it is unusable.
fn local() -> Option<Target> {
    match LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .sandbox_pool(0)
        .build()
    {
        Ok(runner) => Some(Target {
            runner: Arc::new(runner),
            image: None,
            user_namespace: true,
            docker_instance: None,
            pooled: None,
        }),
        Err(e) if ci() => panic!("CI=true but the local sandbox is unusable: {e}"),
        Err(e) => {
            eprintln!("skipping: the local sandbox is unusable here: {e}");
            None
        }
    }
}

/// The local sandbox with every job in a pre-started sandbox (the direct launch is what
/// [`local`] gets for its first job of each kind).
fn local_pooled() -> Option<Target> {
    let mut target = local()?;
    let runner = LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .sandbox_pool(2)
        .build()
        .unwrap();
    target.runner = Arc::new(runner.clone());
    target.pooled = Some(runner);
    Some(target)
}

/// The Docker runner, or `None` (skip) outside CI when the service script did not run.
#[cfg(feature = "docker")]
async fn docker() -> Option<Target> {
    let image = match std::env::var("GATEWAY_TEST_DOCKER_IMAGE") {
        Ok(image) if !image.is_empty() => image,
        _ if ci() => panic!("CI=true but GATEWAY_TEST_DOCKER_IMAGE is not set: run scripts/test"),
        _ => {
            eprintln!("skipping: GATEWAY_TEST_DOCKER_IMAGE not set (run scripts/test)");
            return None;
        }
    };
    let instance = format!("escape-{}", RequestId::new());
    let runner = gateway_runners::DockerRunner::from_env()
        .unwrap()
        .instance(&instance)
        .build()
        .await
        .expect("dockerd must answer when GATEWAY_TEST_DOCKER_IMAGE is set");
    Some(Target {
        runner: Arc::new(runner),
        image: Some(image),
        user_namespace: false,
        docker_instance: Some(instance),
        pooled: None,
    })
}

/// A number no other process on the host has on its command line.
fn tag() -> String {
    let n = u64::from(std::process::id()) * 1000 + u64::from(rand_u16());
    format!("{}", 8_000_000_000u64 + n)
}

fn rand_u16() -> u16 {
    let id = RequestId::new().to_string();
    id.bytes()
        .fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)))
}

/// Host pids whose command line is exactly `sleep <tag>`.
fn host_pids_of(tag: &str) -> Vec<u32> {
    let wanted = format!("sleep\0{tag}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
        })
        .collect()
}

/// Starts `script` (which must end in `exec sleep <tag>`), waits until its sleeper is visible
/// on the host, runs `check` on the sleeper's host pid, then cancels the job.
async fn with_live_job(
    target: &Target,
    script: &str,
    tag: &str,
    check: impl FnOnce(u32),
) -> JobOutcome {
    let spec = target.sh(script);
    let before = target.warm(&spec).await;
    let cancel = CancellationToken::new();
    let runner = target.runner.clone();
    let job = tokio::spawn({
        let cancel = cancel.clone();
        async move { runner.run(spec, cancel).await }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        if let Some(pid) = host_pids_of(tag).first() {
            break *pid;
        }
        assert!(
            Instant::now() < deadline,
            "the job's sleeper never appeared on the host"
        );
        assert!(!job.is_finished(), "the job ended early: {:?}", job.await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    check(pid);
    cancel.cancel();
    let out = job.await.unwrap().unwrap();
    target.was_pooled(before);
    out
}

/// A field of `/proc/<pid>/status`, e.g. `Uid`.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

// ---- the probes ----

/// No file of `/proc/sys` is writable from the job, and a write attempt changes nothing on
/// the host.
async fn sysctls_are_read_only(t: &Target) {
    let host = "/proc/sys/fs/lease-break-time";
    let before = std::fs::read_to_string(host).unwrap();
    let other = before.trim().parse::<u64>().unwrap() + 1;
    let out = t
        .run(t.sh(&format!(
            "{{ echo {other} > {host}; }} 2>/dev/null && echo WROTE {host}; \
             read -r v < /proc/sys/kernel/core_pattern; \
             {{ echo \"$v\" > /proc/sys/kernel/core_pattern; }} 2>/dev/null && echo WROTE core_pattern; \
             [ -w /proc/sysrq-trigger ] && echo WRITABLE sysrq-trigger; \
             find /proc/sys -type f -writable 2>/dev/null | head -n 3; \
             if [ -d /sys ]; then find /sys -maxdepth 3 -writable 2>/dev/null | head -n 3; fi; \
             echo done"
        )))
        .await;
    let after = std::fs::read_to_string(host).unwrap();
    if after != before {
        std::fs::write(host, &before).unwrap();
    }
    assert_eq!(after, before, "the job changed a host sysctl: {out:?}");
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "done",
        "writable kernel settings: {out:?}"
    );
}

/// The job's processes are never host root, and a user namespace maps no id onto host 0.
async fn job_is_never_host_root(t: &Target) {
    let tag = tag();
    let script = format!("exec sleep {tag}");
    let user_namespace = t.user_namespace;
    let out = with_live_job(t, &script, &tag, |pid| {
        for field in ["Uid", "Gid"] {
            let ids = status_field(pid, field);
            assert!(
                ids.split_whitespace().all(|id| id != "0"),
                "{field} of the job on the host: {ids}"
            );
        }
        if user_namespace {
            for map in ["uid_map", "gid_map"] {
                let text = std::fs::read_to_string(format!("/proc/{pid}/{map}")).unwrap();
                for line in text.lines() {
                    let f: Vec<u64> = line
                        .split_whitespace()
                        .map(|x| x.parse().unwrap())
                        .collect();
                    let (outside, count) = (f[1], f[2]);
                    assert!(outside > 0, "{map} maps onto host id 0: {text}");
                    assert!(outside + count <= u64::from(u32::MAX), "{map}: {text}");
                }
            }
        }
    })
    .await;
    assert_eq!(out.status, JobStatus::Cancelled, "{out:?}");
}

/// A set-uid copy of a program, written by the job, is not owned by root on the host and does
/// not give another host user root when run from a copy that keeps its owner and mode.
async fn setuid_files_carry_no_privilege(t: &Target, program: &str, euid_args: &[&str]) {
    let tag = tag();
    let script = format!(
        "cp {program} /tmp/busybox-agw-suid && chmod 4755 /tmp/busybox-agw-suid && \
         grep ' /tmp ' /proc/self/mounts > /tmp/agw-mount; exec sleep {tag}"
    );
    let host_dir = tempfile::Builder::new()
        .prefix("agw-suid-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        host_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let copy = host_dir.path().join("busybox-agw-suid");
    let out = with_live_job(t, &script, &tag, |pid| {
        use std::os::unix::fs::MetadataExt;
        let inside = PathBuf::from(format!("/proc/{pid}/root/tmp/busybox-agw-suid"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !inside.exists() {
            assert!(Instant::now() < deadline, "the job wrote no set-uid file");
            std::thread::sleep(Duration::from_millis(10));
        }
        let meta = std::fs::metadata(&inside).unwrap();
        assert_eq!(
            meta.mode() & 0o4000,
            0o4000,
            "the job could not even set the bit"
        );
        assert_ne!(
            meta.uid(),
            0,
            "the job's set-uid file is owned by host root"
        );
        // `cp -p` as root keeps owner and mode, as an attacker on the host would.
        let cp = std::process::Command::new("cp")
            .arg("-p")
            .arg(&inside)
            .arg(&copy)
            .status()
            .unwrap();
        assert!(cp.success());
        let mount = std::fs::read_to_string(format!("/proc/{pid}/root/tmp/agw-mount")).unwrap();
        assert!(
            mount.contains("nosuid"),
            "the job's /tmp allows set-uid: {mount}"
        );
    })
    .await;
    assert_eq!(out.status, JobStatus::Cancelled, "{out:?}");
    // Run the copy as another host user: its effective uid must not become 0.
    let run = std::process::Command::new("setpriv")
        .args(["--reuid=65533", "--regid=65533", "--clear-groups", "--"])
        .arg(&copy)
        .args(euid_args)
        .output()
        .unwrap();
    let euid = String::from_utf8_lossy(&run.stdout).trim().to_string();
    assert!(run.status.success(), "{run:?}");
    assert_ne!(
        euid, "0",
        "another host user became root through the job's file"
    );
}

/// A fork bomb stops at the pids limit (the Docker runner's own test of this lives here too).
async fn fork_bomb_stops_at_the_pids_limit(t: &Target) {
    let mut spec = t.sh(
        "( i=0; while [ $i -lt 300 ]; do i=$((i+1)); sleep 30 & done ) 2>/dev/null; \
         set -- /proc/[0-9]*; echo $#",
    );
    spec.limits.pids = 20;
    let out = t.run(spec).await;
    let alive: u32 = out
        .stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process count: {out:?}"));
    // The local sandbox's own init is pid 1 of the job's namespace: one more is visible.
    let visible = 20 + u32::from(t.user_namespace);
    assert!(
        alive <= visible,
        "{alive} processes under a pids limit of 20: {out:?}"
    );
    assert!(alive >= 5, "the job could barely fork at all: {out:?}");
    assert!(out.teardown.complete, "{}", out.teardown.detail);
}

/// Memory held in tmpfs counts against the job's memory limit: the job is killed and the
/// outcome says so.
async fn tmpfs_counts_against_the_memory_limit(t: &Target) {
    let limit = 64 * 1024 * 1024;
    let mut spec =
        t.sh("dd if=/dev/zero of=/tmp/fill bs=1M count=200 2>/dev/null; wc -c < /tmp/fill");
    spec.limits.memory_bytes = limit;
    let out = t.run(spec).await;
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    if t.user_namespace {
        // The local sandbox sizes /tmp at the memory limit, which the cgroup reaches first.
        assert_eq!(out.status, JobStatus::OomKilled, "{out:?}");
    } else if out.status != JobStatus::OomKilled {
        // Docker sizes /tmp far below the memory limit: the write stops there.
        let written: u64 = out
            .stdout
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{out:?}"));
        assert!(
            written <= limit,
            "{written} bytes in tmpfs under a {limit}-byte limit"
        );
    }
}

/// The memory limit is for the whole job: four processes of 40 MiB each under 64 MiB.
async fn memory_limit_holds_for_the_whole_job(t: &Target) {
    let mut spec = t.sh(
        "for i in 1 2 3 4; do (dd if=/dev/zero bs=40M count=1 2>/dev/null | sleep 3) & done; \
         wait; echo survived",
    );
    spec.limits.memory_bytes = 64 * 1024 * 1024;
    let out = t.run(spec).await;
    assert_eq!(out.status, JobStatus::OomKilled, "{out:?}");
}

/// `cpu_millis` is a rate: two busy loops for 3 s under 250 millicores get about 0.75 s.
async fn cpu_is_limited_to_the_rate(t: &Target) {
    let mut spec =
        t.sh("for i in 1 2; do timeout 3 sh -c 'while :; do :; done' & done; wait; times");
    spec.limits.cpu_millis = 250;
    let out = t.run(spec).await;
    assert!(out.succeeded(), "{out:?}");
    let children = out
        .stdout
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{out:?}"));
    let cpu: f64 = children.split_whitespace().map(minutes_seconds).sum();
    assert!(
        cpu < 1.5,
        "{cpu:.2} s of CPU in 3 s under 250 millicores: {out:?}"
    );
    assert!(cpu > 0.05, "the loops hardly ran ({cpu:.2} s): {out:?}");
}

/// `1m2.500s` → 62.5.
fn minutes_seconds(text: &str) -> f64 {
    let (m, s) = text
        .trim_end_matches('s')
        .split_once('m')
        .unwrap_or(("0", text));
    m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
}

/// A seccomp filter is on, and the job cannot make a user namespace of its own.
async fn seccomp_on_and_no_nested_user_namespace(t: &Target) {
    let out = t
        .run(t.sh(
            "grep '^Seccomp:' /proc/self/status | tr -d '\\t '; \
             if command -v unshare >/dev/null; then unshare -r true 2>/dev/null && echo NESTED || echo no-userns; \
             else echo no-userns; fi",
        ))
        .await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["Seccomp:2", "no-userns"], "{out:?}");
}

/// After the job nothing of it is left on the host: no process, no cgroup.
async fn nothing_of_the_job_remains(t: &Target) {
    let tag = tag();
    let mut spec = t.sh(&format!(
        "echo x > \"$HOME/agw-{tag}\"; echo x > /tmp/agw-{tag}; (setsid sleep {tag} &) ; sleep {tag}"
    ));
    spec.limits.timeout = Duration::from_millis(700);
    let out = t.run(spec).await;
    assert_eq!(out.status, JobStatus::TimedOut, "{out:?}");
    assert!(out.teardown.complete, "{}", out.teardown.detail);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !host_pids_of(&tag).is_empty() {
        assert!(Instant::now() < deadline, "the job's processes survived it");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let files = find_named(&std::env::temp_dir(), &format!("agw-{tag}"), 3);
    assert!(
        files.is_empty(),
        "the job's files are on the host: {files:?}"
    );
    #[cfg(feature = "docker")]
    if let Some(instance) = &t.docker_instance {
        // A timed-out container may be removed in the background: give it a moment.
        let label = format!("label={}={instance}", gateway_core::labels::INSTANCE);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = std::process::Command::new("docker")
                .args(["ps", "-a", "-q", "--filter", &label])
                .output()
                .unwrap();
            assert!(ps.status.success(), "{ps:?}");
            if ps.stdout.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "containers left: {ps:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if t.image.is_none() {
        let name = out.environment_id.trim_start_matches("local-");
        let left = find_named(Path::new("/sys/fs/cgroup"), name, 6);
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
    }
}

/// Entries named `name` under `root`, at most `depth` levels down.
fn find_named(root: &Path, name: &str, depth: u32) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        if entry.file_name() == name {
            found.push(entry.path());
        } else if depth > 0 {
            found.extend(find_named(&entry.path(), name, depth - 1));
        }
    }
    found
}

// ---- the probes, per backend ----

macro_rules! probes {
    ($($name:ident => |$t:ident| $body:expr;)*) => {
        mod local_sandbox {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some($t) = local() else { return };
                    let $t = &$t;
                    $body.await;
                }
            )*
        }
        mod local_pooled_sandbox {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some($t) = local_pooled() else { return };
                    let $t = &$t;
                    $body.await;
                }
            )*
        }
        #[cfg(feature = "docker")]
        mod docker_runner {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let Some($t) = docker().await else { return };
                    let $t = &$t;
                    $body.await;
                }
            )*
        }
    };
}

probes! {
    sysctls_are_read_only => |t| super::sysctls_are_read_only(t);
    job_is_never_host_root => |t| super::job_is_never_host_root(t);
    // The busybox image has no coreutils; busybox drops set-uid privileges for `id` itself,
    // so there the owner check is the one that matters.
    setuid_files_carry_no_privilege => |t| if t.image.is_some() {
        super::setuid_files_carry_no_privilege(t, "/bin/busybox", &["id", "-u"])
    } else {
        super::setuid_files_carry_no_privilege(t, "/usr/bin/id", &["-u"])
    };
    fork_bomb_stops_at_the_pids_limit => |t| super::fork_bomb_stops_at_the_pids_limit(t);
    tmpfs_counts_against_the_memory_limit => |t| super::tmpfs_counts_against_the_memory_limit(t);
    memory_limit_holds_for_the_whole_job => |t| super::memory_limit_holds_for_the_whole_job(t);
    cpu_is_limited_to_the_rate => |t| super::cpu_is_limited_to_the_rate(t);
    seccomp_on_and_no_nested_user_namespace => |t| super::seccomp_on_and_no_nested_user_namespace(t);
    nothing_of_the_job_remains => |t| super::nothing_of_the_job_remains(t);
}
